#!/usr/bin/env bash
# kqueue CI: `cargo check` and `cargo clippy --all-targets -D warnings` for the
# kqueue platforms, cross, without running anything (see README, Platforms):
# x86_64-apple-darwin, aarch64-apple-darwin and x86_64-unknown-freebsd.
#
# Every package that builds there is checked: tofu and the CLI whole, tofu-bench
# with the peers that build for the target (`bench_args` in ci/cross.sh).
# Toolchain: rustup's targets, or Debian's with -Zbuild-std (ci/cross.sh).
#
# Knobs (environment):
#   TOFU_KQUEUE_TARGET_DIR  cargo target dir     (default: $CARGO_TARGET_DIR, else target)
#   TOFU_KQUEUE_TARGETS     the targets, spaced  (default: the three above)
#   TOFU_CROSS_TOOLCHAIN    auto | rustup | debian (ci/cross.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
LANE=kqueue
# shellcheck source=ci/cross.sh
. ci/cross.sh
read -r -a targets <<<"${TOFU_KQUEUE_TARGETS:-x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd}"
cross_toolchain panic_abort "${targets[@]}"
export CARGO_TARGET_DIR="${TOFU_KQUEUE_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}}"
export CARGO_TERM_COLOR=never

# `cargo check`, then clippy: on Debian's toolchain clippy alone, as
# `clippy --all-targets` checks every target anyway, and there the two would
# rebuild std for each other every time (-Zbuild-std sees std as local code).
check() {
    [ "$TOOLCHAIN" = debian ] || "${CARGO_CMD[@]}" check "$@"
}
what="cargo check, cargo clippy"
[ "$TOOLCHAIN" != debian ] || what="cargo clippy"
for t in "${targets[@]}"; do
    start=$SECONDS
    common=(--target "$t" "${BUILD_STD[@]}")
    echo "== $LANE: $t: $what --all-targets -D warnings (tofu, tofu-cli)"
    check -p tofu-mq -p tofu-cli "${common[@]}"
    "${CLIPPY[@]}" -p tofu-mq -p tofu-cli --all-targets "${common[@]}" -- -D warnings
    bench=$(bench_args "$t")
    if [ "$bench" = skip ]; then
        echo "== $LANE: $t: tofu-bench not built here (ci/cross.sh, bench_args)"
    else
        read -r -a bench <<<"$bench"
        echo "== $LANE: $t: $what --all-targets -D warnings (tofu-bench ${bench[*]})"
        check -p tofu-bench "${bench[@]}" "${common[@]}"
        "${CLIPPY[@]}" -p tofu-bench --all-targets "${bench[@]}" "${common[@]}" -- -D warnings
    fi
    echo "== $LANE: $t: clean ($((SECONDS - start))s)"
done
echo "== $LANE: ${#targets[@]} targets clean with the $TOOLCHAIN toolchain, ${SECONDS}s in all"
