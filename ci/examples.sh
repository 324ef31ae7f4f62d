#!/usr/bin/env bash
# Runs every example under examples/, each under a time limit, and fails
# (non-zero) if any of them fails or times out.
#
#   ci/examples.sh                      # all examples
#   EXAMPLE_TIMEOUT=60 ci/examples.sh   # another limit per run (seconds)
#
# Most examples are self-contained (both sides on loopback, one process) and
# run without arguments. Special cases:
#   * echo_server + echo_client: the server runs in the background on a UDS path
#     in a private temp dir, the client runs against it, then the server is stopped.
set -uo pipefail
cd "$(dirname "$0")/.."

LIMIT=${EXAMPLE_TIMEOUT:-120}
failed=()

# Compile first, so the time limit covers running, not building.
echo "== build examples"
if ! cargo build --examples; then
    echo "examples do not build" >&2
    exit 1
fi

# run NAME [ARGS...]: one example in the foreground, under the time limit.
run() {
    local name=$1
    shift
    echo "== example $name $*"
    timeout "$LIMIT" cargo run -q --example "$name" -- "$@"
    local rc=$?
    if [ "$rc" -eq 124 ]; then
        echo "!! example $name timed out after ${LIMIT}s" >&2
        failed+=("$name (timed out)")
    elif [ "$rc" -ne 0 ]; then
        echo "!! example $name failed (exit $rc)" >&2
        failed+=("$name (exit $rc)")
    fi
}

# The two-process pair: echo_server in the background, echo_client against it.
echo_pair() {
    local dir log addr pid rc
    dir=$(mktemp -d)
    log="$dir/server.log"
    addr="uds|$dir/echo.sock"
    echo "== example echo_server $addr (background) + echo_client $addr"
    timeout "$LIMIT" cargo run -q --example echo_server -- "$addr" >"$log" 2>&1 &
    pid=$!
    # Wait (bounded) until the server says it listens, or dies.
    for _ in $(seq 1 100); do
        grep -q "listening on" "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "listening on" "$log"; then
        cat "$log" >&2
        echo "!! echo_server did not start" >&2
        failed+=("echo_server (did not start)")
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        rm -rf "$dir"
        return
    fi
    run echo_client "$addr"
    # Stop the server (timeout passes the signal on to it) and show its log.
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    sed 's/^/   server: /' "$log"
    # 143 = ended by our SIGTERM, the normal end of a server that runs forever.
    if [ "$rc" -ne 143 ] && [ "$rc" -ne 0 ]; then
        echo "!! echo_server ended with exit $rc" >&2
        failed+=("echo_server (exit $rc)")
    fi
    rm -rf "$dir"
}

for file in examples/*.rs examples/*/main.rs; do
    [ -e "$file" ] || continue
    name=${file#examples/}
    name=${name%/main.rs}
    name=${name%.rs}
    case "$name" in
        echo_server) echo_pair ;;
        echo_client) ;; # run by echo_pair
        *) run "$name" ;;
    esac
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "== examples FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "== all examples passed"
