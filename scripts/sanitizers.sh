#!/usr/bin/env bash
# Runs the test suite under ThreadSanitizer and/or valgrind memcheck.
#
#   scripts/sanitizers.sh [tsan|memcheck|all] [CARGO TEST FILTER...]   (default: all)
#
# tsan      ThreadSanitizer with an instrumented std (-Zbuild-std): the library's
#           unit tests and every integration test binary (`--lib --tests`).
#           Needs a compiler whose std sources are installed. rustup's nightly
#           here has no rust-src component, so this uses Debian's rustc-web
#           (/usr/bin/rustc 1.96, std sources in /usr/lib/rustlib/src, made
#           usable with RUSTC_BOOTSTRAP=1). Debian does not ship the TSan
#           runtime that rustc links (librustc-stable_rt.tsan.a), so a private
#           sysroot is assembled under $TSAN_SYSROOT (default /tmp/tofu-tsan-sysroot):
#           links to Debian's sysroot plus that runtime copied from a rustup
#           toolchain with the same LLVM major version (or set TSAN_RT=/path).
#           No suppressions are used: std is instrumented, so reports are real.
# memcheck  valgrind --tool=memcheck on the library's unit tests and every
#           integration test binary (debug build, one test thread): invalid reads/writes, uninitialised values,
#           and definite/indirect leaks fail the run. Slow (the close tests
#           take ~20 min on a busy 2-core machine): MEMCHECK_TESTS="close data"
#           limits it to those integration test binaries. tests/fd_limit.rs is
#           skipped: it lowers RLIMIT_NOFILE, which valgrind emulates (it keeps
#           descriptors of its own above the limit), so its fd arithmetic does
#           not hold under valgrind; it runs natively and under TSan.
#
# Exit status is non-zero if any run reported an error. Logs go to
# $SAN_LOG_DIR (default target/sanitizers/). Waits in the tests are raised with
# TOFU_TEST_TIMEOUT_SECS (default here 120), since both tools slow code down.
set -uo pipefail
cd "$(dirname "$0")/.."

mode="${1:-all}"
shift || true
filter=("$@")
logdir="${SAN_LOG_DIR:-target/sanitizers}"
mkdir -p "$logdir"
export TOFU_TEST_TIMEOUT_SECS="${TOFU_TEST_TIMEOUT_SECS:-120}"
export RUST_BACKTRACE=1
host=x86_64-unknown-linux-gnu
failed=()

run_tsan() {
    local rustc="${TSAN_RUSTC:-/usr/bin/rustc}" cargo="${TSAN_CARGO:-/usr/bin/cargo}"
    local sysroot="${TSAN_SYSROOT:-/tmp/tofu-tsan-sysroot}"
    local real_sysroot rt
    real_sysroot="$("$rustc" --print sysroot)" || return 1
    if [ ! -d "$real_sysroot/lib/rustlib/src/rust/library" ]; then
        echo "tsan: no std sources under $real_sysroot (apt install rust-web-src)"
        return 1
    fi
    # The runtime must come from a toolchain with the same LLVM major version
    # (ci/msrv.sh installs 1.85, whose LLVM is older: not that one).
    local want_llvm tc
    want_llvm="$("$rustc" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
    rt="${TSAN_RT:-}"
    if [ -z "$rt" ]; then
        for tc in "$HOME"/.rustup/toolchains/*; do
            [ "$("$tc/bin/rustc" -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')" = "$want_llvm" ] || continue
            rt="$(ls "$tc"/lib/rustlib/$host/lib/librustc-*_rt.tsan.a 2>/dev/null | head -1)"
            [ -n "$rt" ] && break
        done
    fi
    if [ -z "$rt" ]; then
        echo "tsan: no librustc-*_rt.tsan.a from a toolchain with LLVM $want_llvm; set TSAN_RT"
        return 1
    fi
    # The private sysroot: Debian's, plus the runtime under the name rustc wants.
    rm -rf "$sysroot"
    mkdir -p "$sysroot/lib/rustlib/$host/lib"
    ln -s "$real_sysroot/lib/rustlib/src" "$sysroot/lib/rustlib/src"
    ln -s "$real_sysroot/lib/rustlib/etc" "$sysroot/lib/rustlib/etc" 2>/dev/null
    for f in "$real_sysroot/lib/rustlib/$host/lib/"*; do
        ln -s "$f" "$sysroot/lib/rustlib/$host/lib/"
    done
    cp "$rt" "$sysroot/lib/rustlib/$host/lib/librustc-stable_rt.tsan.a"

    echo "== tsan: $("$rustc" --version), runtime from $rt"
    local log="$logdir/tsan.log"
    RUSTC_BOOTSTRAP=1 RUSTC="$rustc" \
        RUSTFLAGS="-Zsanitizer=thread --sysroot $sysroot -Cdebuginfo=1" \
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/tsan" \
        TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1}" \
        "$cargo" test -Zbuild-std --target "$host" -p tofu-mq --lib --tests -- \
        "${filter[@]}" >"$log" 2>&1
    local rc=$?
    local reports
    reports=$(grep -c '^WARNING: ThreadSanitizer' "$log")
    echo "tsan: rc=$rc, ThreadSanitizer reports: $reports (log: $log)"
    grep -E '^test result:|Running ' "$log" | sed 's/^/  /'
    if [ $rc -ne 0 ] || [ "$reports" -ne 0 ]; then
        grep -A 30 '^WARNING: ThreadSanitizer' "$log" | head -120
        failed+=(tsan)
    fi
}

run_memcheck() {
    echo "== memcheck: $(valgrind --version)"
    local bins
    # The library's unit tests (binary `tofu-*`), then each integration test.
    bins=$({
        cargo test -p tofu-mq --lib --no-run --message-format=json
        cargo test -p tofu-mq --test '*' --no-run --message-format=json
    } 2>/dev/null | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
    if [ -z "$bins" ]; then
        echo "memcheck: no test binaries built"
        failed+=(memcheck)
        return
    fi
    for bin in $bins; do
        local name log rc
        name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
        if [ -n "${MEMCHECK_TESTS:-}" ]; then
            [[ " $MEMCHECK_TESTS " == *" $name "* ]] || continue
        elif [ "$name" = fd_limit ]; then
            echo "memcheck $name: skipped (valgrind emulates RLIMIT_NOFILE)"
            continue
        fi
        log="$logdir/memcheck-$name.log"
        valgrind --tool=memcheck --error-exitcode=101 --leak-check=full \
            --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
            --track-origins=yes --num-callers=30 \
            "$bin" --test-threads=1 "${filter[@]}" >"$log" 2>&1
        rc=$?
        local result errs
        result=$(grep '^test result:' "$log" | tail -1)
        errs=$(grep -o 'ERROR SUMMARY: [0-9]*' "$log" | tail -1)
        echo "memcheck $name: rc=$rc ${errs:-no summary} ${result:-}"
        if [ $rc -ne 0 ]; then
            failed+=("memcheck-$name")
            grep -B 2 -A 25 -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall param|.*definitely lost)' "$log" | head -80
        fi
    done
}

case "$mode" in
tsan) run_tsan || failed+=(tsan) ;;
memcheck) run_memcheck ;;
all)
    run_tsan || failed+=(tsan)
    run_memcheck
    ;;
*)
    echo "usage: $0 [tsan|memcheck|all] [test filter...]"
    exit 2
    ;;
esac

if [ ${#failed[@]} -ne 0 ]; then
    echo "== sanitizer failures: ${failed[*]}"
    exit 1
fi
echo "== sanitizers clean"
