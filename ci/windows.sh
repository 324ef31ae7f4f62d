#!/usr/bin/env bash
# Windows CI: `cargo clippy --all-targets -D warnings` for x86_64-pc-windows-gnu,
# then the whole workspace test suite cross-built for it and run under Wine 10
# (see README, Platforms).
#
# Wine 10 because it resets like Windows: the reader of a reset connection gets
# WSAECONNRESET and loses what it had not read yet; Debian 12's Wine 8 hands
# the unread data over, then an end of stream, and so hides that behaviour.
# Debian 12 has no Wine 10, so it runs from a Debian 13 ("trixie") chroot made
# with debootstrap, once (about 1.4 GB, 1-2 minutes), in $TOFU_WINE_ROOT.
#
# Idempotent: installs debootstrap and mingw-w64 when they are missing, builds
# the chroot and its Wine prefix once; the toolchain is rustup's target or
# Debian's with -Zbuild-std (ci/cross.sh). Everything mounted for the run
# (proc, /dev, the checkout, the target dir) lives in a mount namespace of its
# own, so it goes away with the lane, and two lanes never see each other's
# mounts; a lock keeps two of them from sharing the Wine prefix at once.
# Without root (debootstrap, chroot, mount) or without the mirror, it prints
# "not applicable: <reason>".
#
# Knobs (environment):
#   TOFU_WIN_TARGET_DIR  cargo target dir for this build   (default: $CARGO_TARGET_DIR/windows)
#   TOFU_WINE_ROOT       the trixie chroot                 (default: /var/lib/tofu-wine/trixie)
#   TOFU_DEBIAN_MIRROR   mirror for debootstrap            (default: the one apt uses)
#   TOFU_WIN_TIMEOUT     limit for running the tests, s    (default: 900)
#   TOFU_CROSS_TOOLCHAIN auto | rustup | debian            (ci/cross.sh)
# Extra arguments are passed to `cargo test` (e.g. `--test close`).
set -euo pipefail
cd "$(dirname "$0")/.."
LANE=windows
TARGET=x86_64-pc-windows-gnu
ROOT="${TOFU_WINE_ROOT:-/var/lib/tofu-wine/trixie}"
export TOFU_WINE_ROOT="$ROOT"
# Inside the chroot.
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver
export WINEPREFIX=/root/.wine-tofu WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml=" # no Mono/Gecko installers

not_applicable() {
    echo "== $LANE: not applicable: $*"
    exit 0
}

# ---- a mount namespace of our own ------------------------------------------------
if [ -z "${TOFU_WIN_NAMESPACE:-}" ]; then
    [ "$(id -u)" -eq 0 ] || not_applicable "the Wine 10 chroot needs root (debootstrap, chroot, mount)"
    unshare --mount --propagation private true 2>/dev/null ||
        not_applicable "no mount namespace here (unshare --mount failed)"
    export TOFU_WIN_NAMESPACE=$EPOCHSECONDS
    exec unshare --mount --propagation private "$PWD/ci/windows.sh" "$@"
fi
SECONDS=$((EPOCHSECONDS - TOFU_WIN_NAMESPACE))

# ---- tools and the chroot ------------------------------------------------------------
# shellcheck source=ci/cross.sh
. ci/cross.sh
apt_install debootstrap gcc-mingw-w64-x86-64
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
if ! flock -n 9; then
    echo "== $LANE: waiting for another Windows lane ($ROOT.lock)"
    flock 9
fi

debian_mirror() {
    [ -z "${TOFU_DEBIAN_MIRROR:-}" ] || { echo "$TOFU_DEBIAN_MIRROR"; return; }
    # The first ".../debian <suite>/main" that apt uses (not -security, -updates).
    apt-cache policy 2>/dev/null |
        awk '$2 ~ /^https?:.*debian/ && $2 !~ /security/ && $3 ~ /^[a-z]+\/main$/ {print $2; exit}' |
        grep . || echo http://deb.debian.org/debian
}
if [ ! -f "$ROOT/.tofu-ready" ]; then
    mirror=$(debian_mirror)
    echo "== $LANE: debootstrap trixie with wine64 into $ROOT from $mirror (${SECONDS}s so far)"
    rm -rf "$ROOT.tmp"
    if ! debootstrap --variant=minbase --include=wine64 trixie "$ROOT.tmp" "$mirror" \
        >"$ROOT.log" 2>&1; then
        tail -n 20 "$ROOT.log"
        if grep -qE 'Failed getting release file|Couldn.t download|Unable to fetch' "$ROOT.log"; then
            rm -rf "$ROOT.tmp"
            not_applicable "debootstrap could not fetch trixie from $mirror (no network?)"
        fi
        echo "== $LANE: debootstrap failed (log above, $ROOT.log)" >&2
        exit 1
    fi
    # minbase has no /etc/hosts, and the by-host-name tests need localhost.
    cp /etc/hosts "$ROOT.tmp/etc/hosts"
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
    touch "$ROOT/.tofu-ready"
    echo "== $LANE: chroot ready (${SECONDS}s so far)"
fi

# ---- mounts, for this namespace only ----------------------------------------------
export CARGO_TARGET_DIR="${TOFU_WIN_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/windows}"
mkdir -p "$CARGO_TARGET_DIR/tmp"
mounts=()
bind() { # bind SRC: SRC at the same path inside the chroot
    mkdir -p "$ROOT$1"
    mount --rbind "$1" "$ROOT$1"
    mounts=("$ROOT$1" "${mounts[@]}")
}
mount -t proc proc "$ROOT/proc"
mounts=("$ROOT/proc")
bind /dev
bind "$PWD"
case "$CARGO_TARGET_DIR/" in
"$PWD"/*) ;;
*) bind "$CARGO_TARGET_DIR" ;;
esac
in_root() { env -u TMPDIR chroot "$ROOT" "$@"; }
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    in_root "$WINESERVER" -k 2>/dev/null || true
    local m
    for m in "${mounts[@]}"; do umount -R -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ ! -f "$ROOT$WINEPREFIX/system.reg" ]; then
    echo "== $LANE: creating the Wine prefix $WINEPREFIX in the chroot"
    in_root "$WINE" wineboot --init >/dev/null 2>&1 || true
    in_root "$WINESERVER" -w
    [ -f "$ROOT$WINEPREFIX/system.reg" ] || { echo "wineboot failed" >&2; exit 1; }
fi
wine_version=$(in_root "$WINE" --version)
flock -u 9 # the chroot is ready; the lock is taken again to run the tests

# ---- clippy, build ----------------------------------------------------------------
cross_toolchain panic_unwind "$TARGET"
echo "== $LANE: $wine_version in $ROOT"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$PWD/ci/windows/wine.sh"
export CARGO_TERM_COLOR=never
# Doctest binaries go to TMPDIR: it must be inside a directory the chroot sees.
export TMPDIR="$CARGO_TARGET_DIR/tmp"
common=(--workspace --exclude tofu-bench --target "$TARGET" "${BUILD_STD[@]}") # tofu-bench: ci/cross.sh
echo "== $LANE: cargo clippy --all-targets -D warnings for $TARGET (${SECONDS}s so far)"
"${CLIPPY[@]}" "${common[@]}" --all-targets -- -D warnings
cargo_test=("${CARGO_CMD[@]}" test "${common[@]}" --no-fail-fast)
echo "== $LANE: building the tests for $TARGET (${SECONDS}s so far)"
"${cargo_test[@]}" --no-run "$@"

# ---- run --------------------------------------------------------------------------
if ! flock -n 9; then
    echo "== $LANE: waiting for another Windows lane to finish its run ($ROOT.lock)"
    flock 9
fi
echo "== $LANE: running them under $wine_version (${SECONDS}s so far)"
# One wineserver for all the test binaries (no start-up each, no race with a
# server that is just exiting), stopped on the way out.
in_root "$WINESERVER" -p || true
log="$CARGO_TARGET_DIR/windows-test.log"
# Not through a pipe: Wine's helper processes (winedevice.exe…) inherit the
# output and outlive the tests, so a reader of the pipe would wait for them.
: >"$log"
timeout --kill-after=30 "${TOFU_WIN_TIMEOUT:-900}" "${cargo_test[@]}" "$@" >>"$log" 2>&1 &
pid=$!
tail -n +1 -f --pid="$pid" "$log" || true
status=0
wait "$pid" || status=$?
pid=

# ---- summary ----------------------------------------------------------------------
# Not-applicable tests pass (libtest has no run-time skip): counted apart.
sum() { grep -o "[0-9]* $1;" "$log" | awk '{s += $1} END {print s + 0}'; }
na=$(grep -c ': not applicable: ' "$log" || true)
echo "== $LANE: $wine_version, $TOOLCHAIN toolchain: $(($(sum passed) - na)) passed," \
    "$na not applicable (reasons above), $(sum failed) failed, $(sum ignored) ignored;" \
    "exit status $status; ${SECONDS}s in all"
exit "$status"
