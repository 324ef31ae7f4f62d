#!/usr/bin/env bash
# A second event backend: the tofu test suite (library, integration tests,
# doctests) on mio's poll(2) selector instead of epoll, which mio builds with
# `--cfg mio_unsupported_force_poll_poll` (README, Platforms). Only `tofu`: the
# CLI and tofu-bench hold no event-loop code of their own.
#
# Knobs (environment):
#   TOFU_POLL_TARGET_DIR  cargo target dir  (default: target/poll; its own, as
#                         RUSTFLAGS differ from every other build's)
# Extra arguments are passed to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
export CARGO_TARGET_DIR="${TOFU_POLL_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/poll}"
export RUSTFLAGS="${RUSTFLAGS:-} --cfg mio_unsupported_force_poll_poll"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:-} --cfg mio_unsupported_force_poll_poll"
export CARGO_TERM_COLOR=never
echo "== poll: cargo test -p tofu-mq with RUSTFLAGS=\"$RUSTFLAGS\""
cargo test -p tofu-mq "$@"
echo "== poll: passed on mio's poll(2) selector, ${SECONDS}s in all"
