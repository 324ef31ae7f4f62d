#!/usr/bin/env bash
# Soak: mixed traffic (many connections over TCP and UDS, reconnects, graceful
# closes, ByeSignal aborts from both sides, a small-pool server for
# backpressure) for SECONDS, then checks the accounting (every request answered,
# returned with a status or lost in an abort; no open channels; pools back to
# zero outstanding; fds back to the start on Linux) and prints a summary.
#
#   scripts/soak.sh [SECONDS]            (default 60)
#   TOFU_SOAK_CONNS=200 scripts/soak.sh 1800
#
# The driver is the ignored test `soak` in tests/soak.rs, built in release mode.
# Other knobs: TOFU_SOAK_CONNS (connections at once, default 100),
# TOFU_SOAK_SEED (random seed).
set -euo pipefail
cd "$(dirname "$0")/.."

export TOFU_SOAK_SECS="${1:-${TOFU_SOAK_SECS:-60}}"
echo "== soak for ${TOFU_SOAK_SECS}s, ${TOFU_SOAK_CONNS:-100} connections"
exec cargo test --release --test soak -- --ignored --nocapture --test-threads=1
