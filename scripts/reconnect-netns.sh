#!/usr/bin/env bash
# Reconnect across a real link: a tofu::Reconnect client in one network
# namespace, an echo server in another, a veth pair between them
# (10.78.0.1/24 client, 10.78.0.2/24 server). The client sends numbered
# Requests one at a time; both sides beat every 200 ms (tofu::Heartbeat) and
# close a connection silent for 1.5 s (Options::idle_timeout). Two runs:
#
#   1. link cut     the server's end of the veth down for 4 s, then up: no
#                   socket event says so; the idle timeout ends the client's
#                   connection, attempts fail (handshake timeout 1 s, backoff
#                   100 ms doubling to 1 s), and once the link is back the
#                   client reconnects by itself and finishes
#   2. server gone  the server process killed, restarted on the same port
#                   2 s later: attempts are refused, then it reconnects
#
# Both must answer every request exactly once, in order (a request
# unanswered when a connection ends is sent again on the next). Prints when
# the client noticed, how many attempts it made, and how long after the link
# (server) came back it was connected again.
#
# The driver is cli/src/bin/reconnect-peer.rs (built in release mode first,
# not timed). The namespace and interface names carry this script's PID, so
# concurrent runs (and scripts/two-hosts.sh) do not collide. Without root or
# working `ip netns` it prints "not applicable: <reason>" and exits 0.
#
#   scripts/reconnect-netns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=7802
OUTAGE=4
DOWN=2
RUN_LIMIT=40 # seconds per process, behind the driver's own --deadline

NAME=reconnect-netns TAG_LONG=tofurc TAG_SHORT=trc
. scripts/netns-common.sh
netns_require ip timeout awk
netns_probe
ip netns del "$PROBE"

netns_build_driver reconnect-peer

setup() {
    netns_link 10.78.0
}

teardown() {
    local ns pid
    for ns in "$NA" "$NB"; do
        if ip netns list | grep -qw "^$ns"; then
            for pid in $(ip netns pids "$ns"); do
                kill -9 "$pid" 2>/dev/null || true
            done
            ip netns del "$ns"
        fi
    done
}

now() { date +%s.%N; }
since() { echo "$1 $2" | awk '{ printf "%.2f", $1 - $2 }'; }

# wait_for FILE PATTERN SECONDS: until PATTERN is in FILE.
wait_for() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q "$2" "$1" && return 0
        sleep 0.05
    done
    return 1
}

# answered FILE: the client's answered count so far.
answered() {
    { grep '^progress answered=' "$1" || true; } | tail -n 1 | cut -d= -f2
}

# wait_answered FILE N SECONDS
wait_answered() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        [ "$(answered "$1")" -ge "$2" ] 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

start_server() {
    SLOG=$workdir/$scenario.server$1.log
    : >"$SLOG"
    # In a subshell whose stderr (only the shell's "Killed" notice) is
    # dropped: the server is killed on purpose.
    (
        timeout "$RUN_LIMIT" ip netns exec "$NB" "$BIN" serve --listen "tcp|10.78.0.2|$PORT" \
            --deadline 30 >"$SLOG" 2>&1
        rc=$?
        exit $rc
    ) 2>/dev/null &
    SPID=$!
    pids+=("$SPID")
    wait_for "$SLOG" "^listening on" 10 || {
        cat "$SLOG"
        fail "server did not start"
        return 1
    }
}

start_client() {
    CLOG=$workdir/$scenario.client.log
    : >"$CLOG"
    timeout "$RUN_LIMIT" ip netns exec "$NA" "$BIN" client --connect "tcp|10.78.0.2|$PORT" \
        --requests 100 --every-ms 50 --deadline 30 >"$CLOG" 2>&1 &
    CPID=$!
    pids+=("$CPID")
}

# field KEY: from the client's RESULT line.
field() {
    { grep '^RESULT client ' "$CLOG" || true; } | sed -n "s/.* $1=\([^ ]*\).*/\1/p"
}

# first_event KIND AFTER: epoch time of the first event KIND after epoch AFTER.
first_event() {
    { grep "^event at=.* kind=$1 " "$CLOG" || true; } |
        sed -n 's/^event at=\([0-9.]*\) .*/\1/p' |
        awk -v after="$2" '$1 >= after { print; exit }'
}

finish_client() {
    local rc=0
    wait "$CPID" || rc=$?
    grep -E '^(RESULT|error)' "$CLOG" | sed 's/^/   client: /' || true
    [ "$rc" -eq 0 ] || fail "client failed (exit $rc)"
    [ "$(field answered)" = 100 ] || fail "answered $(field answered) of 100"
    [ "$(field in_order)" = true ] || fail "answers not each once in order"
    [ "$(field connections)" -ge 2 ] 2>/dev/null || fail "never reconnected: $(field connections) connection(s)"
}

START=$(now)

scenario=link-cut
echo "== 1. link cut for ${OUTAGE}s under a reconnecting client"
setup
if start_server 1; then
    start_client
    if wait_answered "$CLOG" 20 15; then
        t_cut=$(now)
        ip -n "$NB" link set "$VB" down
        sleep "$OUTAGE"
        ip -n "$NB" link set "$VB" up
        t_up=$(now)
        finish_client
        lost=$(first_event lost "$t_cut")
        back=$(first_event connected "$t_cut")
        attempts=$({ grep -c "kind=failed" "$CLOG" || true; })
        waits=$({ grep "kind=failed" "$CLOG" || true; } | sed -n 's/.*wait_ms=\([0-9.]*\).*/\1/p' | tr '\n' ' ')
        if [ -n "$lost" ] && [ -n "$back" ]; then
            echo "   $scenario: client noticed $(since "$lost" "$t_cut")s after the cut" \
                "(idle timeout 1.5 s), $attempts failed attempt(s) (planned waits ms: $waits)," \
                "connected again $(since "$back" "$t_up")s after the link came back"
        else
            fail "no lost/connected events after the cut"
        fi
        grep -q "cause=communication_failed" "$CLOG" || fail "the loss was not an idle timeout"
    else
        fail "the client never got 20 answers"
    fi
fi
teardown

scenario=server-gone
echo "== 2. server killed, back on the same port ${DOWN}s later"
setup
if start_server 1; then
    start_client
    if wait_answered "$CLOG" 20 15; then
        t_kill=$(now)
        for pid in $(ip netns pids "$NB"); do kill -9 "$pid" 2>/dev/null || true; done
        sleep "$DOWN"
        start_server 2
        t_up=$(now)
        finish_client
        lost=$(first_event lost "$t_kill")
        back=$(first_event connected "$t_kill")
        attempts=$({ grep -c "kind=failed" "$CLOG" || true; })
        if [ -n "$lost" ] && [ -n "$back" ]; then
            echo "   $scenario: client noticed $(since "$lost" "$t_kill")s after the kill," \
                "$attempts failed attempt(s), connected again $(since "$back" "$t_up")s after the server was back"
        else
            fail "no lost/connected events after the kill"
        fi
    else
        fail "the client never got 20 answers"
    fi
fi
teardown

total=$(since "$(now)" "$START")
if [ "${#failures[@]}" -ne 0 ]; then
    echo "== reconnect-netns FAILED (${total}s):"
    printf '   %s\n' "${failures[@]}"
    exit 1
fi
echo "== reconnect-netns passed in ${total}s"
