#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints the executions.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60)
#   FUZZ_TARGETS="address decode" scripts/fuzz.sh 600
#
# Needs the nightly toolchain and cargo-fuzz. Each target keeps its growing
# corpus in fuzz/corpus/<target>/ (not in git) and also reads the committed
# seeds in fuzz/seeds/<target>/ and the regression inputs in
# fuzz/regressions/<target>/ (crash inputs found earlier, replayed by
# src/fuzz_replay.rs on stable). A crash leaves its input in
# fuzz/artifacts/<target>/; the script then exits non-zero after the other
# targets ran. Copy the input to fuzz/regressions/<target>/ and add it to
# src/fuzz_replay.rs when you fix the bug.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
logdir="${FUZZ_LOG_DIR:-target/fuzz-logs}"
mkdir -p "$logdir"
logdir="$(cd "$logdir" && pwd)"

failed=()
summary=()
for t in $targets; do
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    for d in "seeds/$t" "regressions/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    log="$logdir/$t.log"
    echo "== fuzz $t for ${secs}s (log: $log)"
    cargo +nightly fuzz run "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=30 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    corpus=$(find "corpus/$t" -type f | wc -l)
    line="$t: rc=$rc executions=${execs:-?} ${cov:-cov: ?} corpus=$corpus"
    if [ $rc -ne 0 ]; then
        failed+=("$t")
        line="$line  FAILED (see $log and fuzz/artifacts/$t/)"
        tail -40 "$log"
    fi
    summary+=("$line")
done

echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "== crashes in: ${failed[*]}"
    exit 1
fi
