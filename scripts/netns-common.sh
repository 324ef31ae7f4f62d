# Shared by scripts/two-hosts.sh and scripts/reconnect-netns.sh (sourced, not
# run): the "can we do this here?" checks, names that carry the caller's PID
# (so concurrent runs do not collide), and the clean-up of what the caller
# started. Before sourcing, set NAME (for messages) and TAG_LONG / TAG_SHORT
# (namespace and interface name prefixes; interface names stay under 16
# bytes). Afterwards: NA, NB (namespaces), VA, VB (the veth ends), PROBE,
# `pids` (append every process started), `workdir` (removed at exit), and
# the functions `na` and `netns_probe`.

na() {
    echo "$NAME: not applicable: $*"
    exit 0
}

# Linux, root, and the commands given.
netns_require() {
    [ "$(uname -s)" = Linux ] || na "not Linux ($(uname -s))"
    [ "$(id -u)" -eq 0 ] || na "needs root (ip netns), running as uid $(id -u)"
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || na "no '$tool' command"
    done
}

tag=$$
NA=$TAG_LONG-a-$tag
NB=$TAG_LONG-b-$tag
VA=${TAG_SHORT}a$tag
VB=${TAG_SHORT}b$tag
PROBE=$TAG_LONG-probe-$tag
pids=()
workdir=$(mktemp -d)

# Ends what the script started (by pid) and deletes its namespaces.
netns_cleanup() {
    local pid ns
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for ns in "$NA" "$NB" "$PROBE"; do
        if ip netns list 2>/dev/null | grep -qw "^$ns"; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$pid" 2>/dev/null || true
            done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    rm -rf "$workdir"
}
trap netns_cleanup EXIT

# A throw-away namespace with a veth pair: "not applicable" if either fails.
# Leaves $PROBE in place for further checks; the caller deletes it.
netns_probe() {
    local out
    if ! out=$(ip netns add "$PROBE" 2>&1); then
        na "ip netns add fails: $out"
    fi
    if ! out=$(ip netns exec "$PROBE" ip link set lo up 2>&1); then
        na "ip netns exec fails: $out"
    fi
    if ! out=$(ip -n "$PROBE" link add "p$VA" type veth peer name "p$VB" 2>&1); then
        na "no veth pairs: $out"
    fi
}

# Builds the driver binary $1 of tofu-cli in release mode (not timed) and
# sets BIN to its path.
netns_build_driver() {
    echo "== $NAME: build the driver"
    cargo build --release -q -p tofu-cli --bin "$1"
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    BIN=$target_dir/release/$1
    [ -x "$BIN" ] || {
        echo "$NAME: driver not found at $BIN" >&2
        exit 1
    }
}

failures=()
scenario=""
# Records a failure of the current scenario (the caller reports them all).
fail() {
    echo "!! $scenario: $*"
    failures+=("$scenario: $*")
}

# The two namespaces and the veth pair between them: $1.1 on $VA (in $NA),
# $1.2 on $VB (in $NB), /24, everything up.
netns_link() {
    ip netns add "$NA"
    ip netns add "$NB"
    ip -n "$NA" link add "$VA" type veth peer name "$VB" netns "$NB"
    ip -n "$NA" addr add "$1.1/24" dev "$VA"
    ip -n "$NB" addr add "$1.2/24" dev "$VB"
    ip -n "$NA" link set lo up
    ip -n "$NB" link set lo up
    ip -n "$NA" link set "$VA" up
    ip -n "$NB" link set "$VB" up
}
