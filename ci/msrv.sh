#!/usr/bin/env bash
# The minimum supported Rust version the manifest claims (`rust-version` in
# the workspace's Cargo.toml) — two checks:
#
#   1. the library compiled with that toolchain (`cargo +VERSION check -p
#      tofu-mq --lib`, with and without the `unstable` feature): only the
#      library, as dev-dependencies may need a newer compiler. Where the
#      toolchain cannot be installed (no rustup, offline), this step prints
#      "not applicable: <reason>" and the script goes on;
#   2. always, clippy's `incompatible_msrv` lint on stable: it reads
#      `rust-version` and flags any std API stabilised after it. (The lint is
#      in clippy::all, so .ci/run's `clippy -D warnings` already enforces it
#      on every target; this step names it and runs it on the library alone.)
#
# Knobs (environment):
#   TOFU_MSRV_TARGET_DIR  cargo target dir for the old toolchain
#                         (default: target/msrv; its own, as rustc differs)
# Cheap when warm: a few seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
export CARGO_TERM_COLOR=never

msrv=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
if [ -z "$msrv" ]; then
    echo "msrv: no rust-version in Cargo.toml" >&2
    exit 1
fi

echo "== msrv: cargo +$msrv check -p tofu-mq --lib"
why=""
if ! command -v rustup >/dev/null 2>&1; then
    why="rustup is not installed, so toolchain $msrv cannot be"
elif ! out=$(rustup toolchain install "$msrv" --profile minimal 2>&1); then
    why="rustup could not install toolchain $msrv ($(printf '%s' "$out" | tail -n 1))"
fi
if [ -n "$why" ]; then
    echo "== msrv: not applicable: $why"
else
    target="${TOFU_MSRV_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/msrv}"
    CARGO_TARGET_DIR="$target" cargo "+$msrv" check -p tofu-mq --lib
    CARGO_TARGET_DIR="$target" cargo "+$msrv" check -p tofu-mq --lib --features unstable
    echo "== msrv: the library builds with $(rustc "+$msrv" --version)"
fi

echo "== msrv: clippy::incompatible_msrv (stable clippy against rust-version $msrv)"
cargo clippy -p tofu-mq --lib --features unstable -- -D clippy::incompatible_msrv
echo "== msrv: passed, ${SECONDS}s"
