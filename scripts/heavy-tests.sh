#!/usr/bin/env bash
# Runs the heavy reliability tests (the #[ignore]d ones of issue 5) in release
# mode, one test binary at a time, one test at a time; exits non-zero on the
# first failure. Linux only (they use /proc, setrlimit and child processes).
#
#   scripts/heavy-tests.sh            # all of them
#   scripts/heavy-tests.sh scale      # only tests/scale.rs
#
# Each test prints its figures (lines starting with SCALE, CHURN, PRESSURE...).
set -euo pipefail
cd "$(dirname "$0")/.."

suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    suites=(scale churn pressure)
fi

# Build once, so the timings below are the tests' own.
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
cargo test --release -p tofu-mq "${args[@]}" --no-run

status=0
for s in "${suites[@]}"; do
    echo "=== $s (release, --ignored)"
    start=$(date +%s)
    # child_entry is the entry point of the child processes, not a test.
    if ! cargo test --release -p tofu-mq --test "$s" -- --ignored --test-threads=1 \
        --nocapture --skip child_entry; then
        echo "=== $s FAILED"
        status=1
        break
    fi
    echo "=== $s passed in $(( $(date +%s) - start )) s"
done
exit $status
