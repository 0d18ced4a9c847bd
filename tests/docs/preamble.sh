# Prepended to every shell block by tests/docs/test_examples.py: background servers and output checks.
_docs_pids=()
_docs_ports=()

_docs_serve() { # PORT, with the server's lines on stdin: start them in a process group of their own
    local script
    script=$(cat)
    setsid bash -euo pipefail -c "$script" >"$DOCS_TMP/server-$1.log" 2>&1 </dev/null &
    _docs_pids+=("$!")
    _docs_ports+=("$1")
    echo "$!" >>"$DOCS_PIDFILE"
}

_docs_ready() { # wait until every server started so far answers /api/health with 200
    local i pid port deadline=$((SECONDS + DOCS_SERVER_TIMEOUT))
    for i in "${!_docs_pids[@]}"; do
        pid=${_docs_pids[$i]}
        port=${_docs_ports[$i]}
        until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/api/health")" = 200 ]; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "docs test: the server meant for port $port exited; its output is in server-$port.log" >&2
                exit 1
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "docs test: nothing answered on port $port within ${DOCS_SERVER_TIMEOUT}s" >&2
                exit 1
            fi
            sleep 0.1
        done
    done
}

_docs_stop() {
    local pid
    for pid in "${_docs_pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${_docs_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap _docs_stop EXIT

_docs_check() { # COMMAND OUTPUT PATTERN
    # shellcheck disable=SC2053  # the pattern is a glob on purpose (… in the docs)
    if [[ $2 == $3 ]]; then
        printf '%s\n' "$2"
    else
        printf 'docs test: `%s` printed\n%s\ninstead of\n%s\n' "$1" "$2" "$3" >&2
        exit 1
    fi
}

