# Sourced by ci/windows.sh and ci/kqueue.sh: the cross toolchain, the packages a
# lane installs, and which packages build on which target.
#
# A lane uses rustup's targets when `rustup target add` succeeds (no std to
# build, rustup's clippy) and falls back to Debian's rustc-web toolchain (1.96,
# with the std sources and clippy) with RUSTC_BOOTSTRAP=1 and -Zbuild-std when
# it does not; it prints which one ran. TOFU_CROSS_TOOLCHAIN=debian forces the
# fallback (to test it), =rustup forbids it.

# apt_install PKG...: installs the Debian packages that are missing.
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    echo "== $LANE: installing ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

# cross_toolchain PANIC TARGET...: picks the toolchain for TARGETs and sets
#   CARGO_CMD   the cargo command (array)
#   CLIPPY      the `cargo clippy` command (array)
#   BUILD_STD   extra cargo arguments: empty, or -Zbuild-std=std,PANIC
#   TOOLCHAIN   "rustup" or "debian", for the lane's summary
# PANIC is the panic runtime std is built with on the fallback: panic_unwind
# to run tests, panic_abort is enough to check.
cross_toolchain() {
    local panic=$1
    shift
    local why="TOFU_CROSS_TOOLCHAIN=debian"
    if [ "${TOFU_CROSS_TOOLCHAIN:-auto}" != debian ]; then
        if ! command -v rustup >/dev/null 2>&1; then
            why="no rustup"
        elif ! rustup target add "$@" >/dev/null 2>&1; then
            why="\`rustup target add $*\` failed"
        elif ! rustup component add clippy >/dev/null 2>&1; then
            why="\`rustup component add clippy\` failed"
        else
            CARGO_CMD=(cargo)
            CLIPPY=(cargo clippy)
            BUILD_STD=()
            TOOLCHAIN=rustup
            echo "== $LANE: toolchain: rustup targets $* ($(rustc --version))"
            return 0
        fi
        if [ "${TOFU_CROSS_TOOLCHAIN:-auto}" = rustup ]; then
            echo "== $LANE: $why, and TOFU_CROSS_TOOLCHAIN=rustup" >&2
            return 1
        fi
    fi
    apt_install rustc-web cargo-web rust-web-src rust-web-clippy
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
    CARGO_CMD=(/usr/bin/cargo)
    # Straight to Debian's cargo-clippy: `cargo clippy` would find rustup's
    # proxy in ~/.cargo/bin first. It runs $CARGO, and the clippy-driver beside it.
    export CARGO=/usr/bin/cargo
    CLIPPY=(/usr/bin/cargo-clippy clippy)
    BUILD_STD=("-Zbuild-std=std,$panic")
    TOOLCHAIN=debian
    echo "== $LANE: toolchain: Debian's $(/usr/bin/rustc --version) with -Zbuild-std ($why)"
}

# bench_args TARGET: the one place that says how tofu-bench builds on each
# cross target; prints its cargo feature arguments, or "skip".
#   zeromq      zmq-sys builds the bundled libzmq (C++) with the host compiler,
#               which rejects the Apple `-arch` flag: native builds only.
#   message-io  0.19 does not build for FreeBSD (it calls `bind_device`).
#   Windows     tofu-bench is Unix-only (Unix-domain sockets, poll(2), rlimits).
bench_args() {
    case "$1" in
    *-apple-darwin) echo "--no-default-features --features message-io" ;;
    x86_64-unknown-freebsd) echo "--no-default-features" ;;
    *-windows-*) echo "skip" ;;
    *) echo "" ;;
    esac
}
