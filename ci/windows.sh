#!/usr/bin/env bash
# Windows CI: the whole workspace test suite cross-built for
# x86_64-pc-windows-gnu and run under Wine, on Debian 12 (see README, Platforms).
#
# Idempotent: installs Debian's rustc/cargo (with the std sources, so that
# -Zbuild-std can build std for the target), mingw-w64 and Wine only when they are
# missing, creates the Wine prefix once, and builds the ProcessPrng shim DLL once.
#
# Knobs (environment):
#   TOFU_WIN_TARGET_DIR  cargo target dir for this build   (default: target/windows)
#   TOFU_WINEPREFIX      the Wine prefix                   (default: /tmp/tofu-wine-$UID)
#   TOFU_WIN_TIMEOUT     limit for running the tests, s    (default: 900)
# Extra arguments are passed to `cargo test` (e.g. `--test close`).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
TARGET=x86_64-pc-windows-gnu
PKGS=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64 wine64)

# ---- tools ------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== windows: installing ${missing[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
        --no-install-recommends "${PKGS[@]}" >/dev/null
    echo "== windows: installed (${SECONDS}s)"
fi
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver64
echo "== windows: $(/usr/bin/rustc --version), $(/usr/bin/cargo --version), wine $("$WINE" --version)"

# ---- Wine prefix --------------------------------------------------------------
export WINEPREFIX="${TOFU_WINEPREFIX:-/tmp/tofu-wine-$(id -u)}"
export WINEDEBUG=-all
# No Mono/Gecko installers; our bcryptprimitives.dll (native) before any builtin.
export WINEDLLOVERRIDES="mscoree,mshtml=;bcryptprimitives=n,b"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "== windows: creating the Wine prefix $WINEPREFIX"
    mkdir -p "$WINEPREFIX"
    "$WINE" wineboot --init >/dev/null 2>&1 || true
    "$WINESERVER" -w
    [ -f "$WINEPREFIX/system.reg" ] || { echo "wineboot failed" >&2; exit 1; }
fi

# Rust's std imports ProcessPrng from bcryptprimitives.dll, which Wine 8 lacks:
# without this shim every .exe exits with code 53 before main.
DLL="$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
SHIM=ci/windows/processprng.c
if [ ! -f "$DLL.tofu" ] || [ "$SHIM" -nt "$DLL.tofu" ]; then
    echo "== windows: building the ProcessPrng shim ($SHIM)"
    x86_64-w64-mingw32-gcc -shared -O2 -s -o "$DLL" "$SHIM" -lbcrypt
    touch "$DLL.tofu"
fi

# ---- build and test -------------------------------------------------------------
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$WINE"
export CARGO_TARGET_DIR="${TOFU_WIN_TARGET_DIR:-$PWD/target/windows}"
export CARGO_TERM_COLOR=never
cargo_test=(/usr/bin/cargo test --workspace --exclude tofu-bench --no-fail-fast -Zbuild-std=std,panic_unwind --target "$TARGET")
echo "== windows: building the tests for $TARGET (${SECONDS}s so far)"
mkdir -p "$CARGO_TARGET_DIR"
"${cargo_test[@]}" --no-run "$@" 2>&1 | tee "$CARGO_TARGET_DIR/windows-build.log"
# Clippy does not reach the Windows-only code (no clippy for this toolchain):
# at least, no compiler warning in our packages.
if grep -E '^warning: `tofu(-cli|-bench)?` .*generated' "$CARGO_TARGET_DIR/windows-build.log"; then
    echo "== windows: warnings in the Windows build (see above)" >&2
    exit 1
fi
echo "== windows: running them under Wine (${SECONDS}s so far)"
# One wineserver for all the test binaries (no start-up each, no race with a
# server that is just exiting), stopped on the way out.
"$WINESERVER" -p || true
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    "$WINESERVER" -k 2>/dev/null || true
}
trap cleanup EXIT
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
echo "== windows: $(($(sum passed) - na)) passed, $na not applicable (reasons above)," \
    "$(sum failed) failed, $(sum ignored) ignored; exit status $status; ${SECONDS}s in all"
exit "$status"
