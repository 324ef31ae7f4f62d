#!/usr/bin/env bash
# Two hosts: tofu between two network namespaces joined by a veth pair
# (10.77.0.1/24 sends, 10.77.0.2/24 receives), the sender's side rate-limited
# with tbf (20 Mbit/s). Four runs of one sender streaming 3,000 numbered
# Signals of 4 KiB, each with every message accounted for:
#
#   1. slow link        all delivered in order, exactly once; the sender's
#                       pool (32 messages) ran dry, i.e. backpressure held it
#   2. link cut         both veth ends down for 3 s mid-stream, then up:
#                       TCP recovers, still all delivered in order, exactly once
#   3. peer deleted     the receiver killed and its namespace deleted
#                       mid-stream: the sender ends the channel (its reset, or
#                       the sender's stall deadline + bye_timeout) and
#                       posted = written + returned
#   3b. peer vanished   the same, but the veth is deleted first, so not even a
#                       reset arrives: the stall deadline, then bye_timeout
#                       (2 s) must end the channel (cause communication_failed)
#
# The driver is cli/src/bin/two-hosts-peer.rs (built here in release mode,
# before the clock starts). Without root or working `ip netns` (a container
# without CAP_SYS_ADMIN, not Linux) it prints "not applicable: <reason>" and
# exits 0.
#
#   scripts/two-hosts.sh
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=3000
SIZE=4096
POOL=32
RATE=20mbit
OUTAGE=3
PORT=7801
RUN_LIMIT=60 # seconds per process, a last resort behind the drivers' own deadlines

# ----- can we do this here? ---------------------------------------------------

NAME=two-hosts TAG_LONG=tofu2h TAG_SHORT=t2h
. scripts/netns-common.sh
netns_require ip tc timeout
netns_probe
if ! out=$(ip netns exec "$PROBE" tc qdisc add dev "p$VA" root tbf rate "$RATE" burst 32kbit latency 400ms 2>&1); then
    na "no tbf qdisc: $out"
fi
ip netns del "$PROBE"

# ----- build (not timed) --------------------------------------------------------

netns_build_driver two-hosts-peer

# ----- helpers ------------------------------------------------------------------

# Two namespaces, a veth pair between them, tbf on the sender's end.
setup() {
    netns_link 10.77.0
    ip netns exec "$NA" tc qdisc add dev "$VA" root tbf rate "$RATE" burst 32kbit latency 400ms
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

# field FILE ROLE KEY: a value from the RESULT line of a driver's log.
field() {
    { grep "^RESULT $2 " "$1" || true; } | sed -n "s/.* $3=\([^ ]*\).*/\1/p" | tail -n 1
}

# progress FILE: the receiver's last progress count.
progress() {
    local n
    n=$({ grep '^progress received=' "$1" || true; } | tail -n 1 | cut -d= -f2)
    echo "${n:-0}"
}

# wait_for FILE PATTERN SECONDS PID: until PATTERN is in FILE (0), or the
# process ends or time runs out (1).
wait_for() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        grep -q "$2" "$1" && return 0
        kill -0 "$4" 2>/dev/null || break
        sleep 0.05
    done
    grep -q "$2" "$1"
}

# wait_progress FILE N SECONDS PID: until the receiver has N messages.
wait_progress() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        [ "$(progress "$1")" -ge "$2" ] && return 0
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# start_pair RECV_ARGS -- SEND_ARGS: the receiver in NB, then the sender in NA.
start_pair() {
    local recv_args=() send_args=()
    while [ "$1" != -- ]; do
        recv_args+=("$1")
        shift
    done
    shift
    send_args=("$@")
    RLOG=$workdir/$scenario.recv.log
    SLOG=$workdir/$scenario.send.log
    : >"$RLOG"
    : >"$SLOG"
    # In a subshell whose stderr (nothing but the shell's own "Killed"
    # notice: the driver's goes to the log) is dropped, so a receiver killed
    # on purpose ends quietly with status 137.
    (
        timeout "$RUN_LIMIT" ip netns exec "$NB" "$BIN" recv --listen "tcp|10.77.0.2|$PORT" \
            "${recv_args[@]}" >"$RLOG" 2>&1
        rc=$?
        exit $rc
    ) 2>/dev/null &
    RPID=$!
    pids+=("$RPID")
    if ! wait_for "$RLOG" "^listening on" 10 "$RPID"; then
        cat "$RLOG"
        fail "receiver did not start"
        return 1
    fi
    timeout "$RUN_LIMIT" ip netns exec "$NA" "$BIN" send --connect "tcp|10.77.0.2|$PORT" \
        --count "$COUNT" --size "$SIZE" --pool "$POOL" "${send_args[@]}" >"$SLOG" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    T0=$(date +%s.%N)
}


show_logs() {
    grep -E '^(RESULT|error|note|gave up)' "$SLOG" | sed 's/^/   sender:   /' || true
    grep -E '^(RESULT|error|note)' "$RLOG" | sed 's/^/   receiver: /' || true
}

elapsed() {
    echo "$(date +%s.%N) $T0" | awk '{ printf "%.1f", $1 - $2 }'
}

# The checks shared by the runs where everything must arrive.
check_complete() {
    local src=$1 rrc=$2
    [ "$src" -eq 0 ] || fail "sender failed (exit $src)"
    [ "$rrc" -eq 0 ] || fail "receiver failed (exit $rrc)"
    [ "$(field "$SLOG" sender written_data)" = "$COUNT" ] || fail "sender wrote $(field "$SLOG" sender written_data) of $COUNT"
    [ "$(field "$SLOG" sender returned_total)" = 0 ] || fail "messages came back: $(field "$SLOG" sender returned_total)"
    [ "$(field "$SLOG" sender cause)" = none ] || fail "sender's channel ended with cause $(field "$SLOG" sender cause)"
    [ "$(field "$RLOG" receiver received)" = "$COUNT" ] || fail "receiver got $(field "$RLOG" receiver received) of $COUNT"
    [ "$(field "$RLOG" receiver cause)" = none ] || fail "receiver's channel ended with cause $(field "$RLOG" receiver cause)"
}

# The checks of the runs where the receiver disappears.
check_accounted() {
    local src=$1 posted sent returned written received
    [ "$src" -eq 0 ] || fail "sender failed (exit $src)"
    posted=$(field "$SLOG" sender posted_total)
    sent=$(field "$SLOG" sender messages_sent)
    returned=$(field "$SLOG" sender returned_total)
    written=$(field "$SLOG" sender written_data)
    received=$(progress "$RLOG")
    if [ -z "$posted" ]; then
        fail "sender printed no result"
        return
    fi
    [ "$posted" -eq $((sent + returned)) ] || fail "posted $posted != written $sent + returned $returned"
    [ "$received" -le "$written" ] || fail "receiver saw $received but only $written were written"
    if grep -q '^error' "$RLOG"; then
        fail "receiver reported an error before it was killed"
    fi
    echo "   accounting: posted $(field "$SLOG" sender posted_data) data messages;" \
        "written $written, returned $(field "$SLOG" sender returned_data)" \
        "($(field "$SLOG" sender returned_statuses)); receiver had $received when killed;" \
        "$((written - received)) written but never seen by it (lost with the kernel's buffers)"
}

# ----- the scenarios ------------------------------------------------------------

START=$(date +%s.%N)
echo "== two hosts: $COUNT x $SIZE B over veth, tbf $RATE on the sender's side, sender pool $POOL"

# finish_complete: waits for both ends of a stream that must complete, shows
# their logs and checks that every message arrived; leaves the time in $t.
finish_complete() {
    local src=0 rrc=0
    wait "$SPID" || src=$?
    wait "$RPID" || rrc=$?
    t=$(elapsed)
    show_logs
    check_complete "$src" "$rrc"
}

scenario=slow-link
echo "== 1. slow link"
setup
if start_pair --count "$COUNT" -- --stall 20 --bye-timeout 10; then
    finish_complete
    waits=$(field "$SLOG" sender pool_waits)
    [ "${waits:-0}" -gt 0 ] || fail "the sender's pool never ran dry: no backpressure seen"
    rate=$(field "$SLOG" sender mbit_per_s)
    awk -v r="${rate:-0}" 'BEGIN { exit !(r <= 22) }' || fail "$rate Mbit/s: the tbf limit did not apply"
    echo "   $scenario: ${t}s, $(field "$RLOG" receiver received) received in order," \
        "$rate Mbit/s, sender waited for its pool $waits times (max $(field "$SLOG" sender max_outstanding) outstanding)"
fi
teardown

scenario=link-cut
echo "== 2. link cut for ${OUTAGE}s mid-stream, then restored"
setup
if start_pair --count "$COUNT" -- --stall 20 --bye-timeout 10; then
    if wait_progress "$RLOG" 600 20 "$RPID"; then
        before=$(progress "$RLOG")
        ip -n "$NA" link set "$VA" down
        ip -n "$NB" link set "$VB" down
        sleep "$OUTAGE"
        during=$(progress "$RLOG")
        ip -n "$NA" link set "$VA" up
        ip -n "$NB" link set "$VB" up
        t_up=$(date +%s.%N)
        [ "$during" -lt "$COUNT" ] || fail "the stream had finished before the link came back: nothing was cut"
        echo "   link down at $before received, $during when it came back up"
    else
        fail "the receiver never reached 600 messages"
    fi
    finish_complete
    echo "   $scenario: ${t}s in all, $(echo "$(date +%s.%N) ${t_up:-0}" | awk '{ printf "%.1f", $1 - $2 }')s after the link came back," \
        "$(field "$RLOG" receiver received) received in order"
fi
teardown

# kill_receiver: SIGKILL every process in the receiver's namespace (only ours).
kill_receiver() {
    local pid
    for pid in $(ip netns pids "$NB"); do
        kill -9 "$pid"
    done
}

# kill_mid_stream CUT_VETH_FIRST: once the receiver has 600 messages, kill it
# and delete its namespace — after deleting the veth first when CUT_VETH_FIRST
# is 1, so that no reset can reach the sender. Leaves the sender's cause in
# $cause and the kill time in $t_kill; checks the accounting.
kill_mid_stream() {
    if wait_progress "$RLOG" 600 20 "$RPID"; then
        if [ "$1" = 1 ]; then
            ip -n "$NA" link del "$VA"
        fi
        kill_receiver
        ip netns del "$NB"
        t_kill=$(date +%s.%N)
    else
        fail "the receiver never reached 600 messages"
    fi
    src=0
    wait "$SPID" || src=$?
    wait "$RPID" || true # killed on purpose
    show_logs
    check_accounted "$src"
    cause=$(field "$SLOG" sender cause)
}

# since_kill: seconds since $t_kill.
since_kill() {
    echo "$(date +%s.%N) ${t_kill:-0}" | awk '{ printf "%.1f", $1 - $2 }'
}

scenario=peer-deleted
echo "== 3. receiver killed and its namespace deleted mid-stream"
setup
if start_pair -- --stall 1.5 --bye-timeout 2; then
    kill_mid_stream 0
    case "$cause" in
        none | never | "") fail "the sender's channel did not end with a failure: cause '$cause'" ;;
    esac
    echo "   $scenario: the sender ended $(since_kill)s after the kill" \
        "(cause $cause, gave up on a stall: $(field "$SLOG" sender gave_up))"
fi
teardown

scenario=peer-vanished
echo "== 3b. veth deleted, then the receiver killed and its namespace deleted (no reset reaches the sender)"
setup
if start_pair -- --stall 1.5 --bye-timeout 2; then
    kill_mid_stream 1
    [ "$cause" = communication_failed ] || fail "cause '$cause', expected communication_failed (bye_timeout)"
    [ "$(field "$SLOG" sender bye_timeouts)" = 1 ] || fail "bye_timeouts = $(field "$SLOG" sender bye_timeouts), expected 1"
    [ "$(field "$SLOG" sender returned_data)" -gt 0 ] || fail "no queued data message came back"
    echo "   $scenario: the sender ended $(since_kill)s after the kill (cause $cause)"
fi
teardown

total=$(echo "$(date +%s.%N) $START" | awk '{ printf "%.1f", $1 - $2 }')
if [ "${#failures[@]}" -ne 0 ]; then
    echo "== two hosts FAILED (${total}s):"
    printf '   %s\n' "${failures[@]}"
    exit 1
fi
echo "== two hosts passed in ${total}s"
