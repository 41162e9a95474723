#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 10), one after the other.
# Exits non-zero if a target crashes (panic, failed invariant, sanitizer report, timeout,
# out of memory) or the build fails.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS=0 only replays fuzz/seeds and fuzz/corpus once (libFuzzer -runs=0): a regression
# check without mutation.
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none (faster, no ASan)
#   FUZZ_ARGS        extra libFuzzer flags, e.g. "-seed=1 -jobs=2"
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc and cargo take the -Z
# flags cargo-fuzz passes (-Zsanitizer=address). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
#
# Corpora grow in fuzz/corpus/<target> (not committed); fuzz/seeds/<target> (committed) is
# read too. Crashes land in fuzz/artifacts/<target>/, logs in fuzz/artifacts/logs/.

set -u
cd "$(dirname "$0")"

SECS=${1:-10}
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(credential token jwks native config callout_responses json shared header_map engine)
SAN=${FUZZ_SANITIZER:-address}

export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || {
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
}

start=$(date +%s)
mkdir -p artifacts/logs
if ! cargo fuzz build -s "$SAN" >artifacts/logs/build.log 2>&1; then
    tail -n 30 artifacts/logs/build.log >&2
    echo "fuzz build failed (artifacts/logs/build.log)" >&2
    exit 2
fi
built=$(date +%s)

failed=()
printf '%-18s %10s %8s %6s %7s  %s\n' target execs exec/s cov ft result
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    log="artifacts/logs/$t.log"
    if [ "$SECS" = 0 ]; then
        limit=(-runs=0)
    else
        limit=(-max_total_time="$SECS")
    fi
    # shellcheck disable=SC2086
    cargo fuzz run -s "$SAN" "$t" "corpus/$t" "seeds/$t" -- \
        "${limit[@]}" -timeout=10 -print_final_stats=1 "${dict[@]}" ${FUZZ_ARGS:-} \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    if [ $rc -eq 0 ]; then
        result=ok
    else
        result="CRASH (exit $rc; see $log and artifacts/$t/)"
        failed+=("$t")
    fi
    printf '%-18s %10s %8s %6s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
end=$(date +%s)
echo "build $((built - start)) s, fuzzing $((end - built)) s, total $((end - start)) s"

if [ ${#failed[@]} -gt 0 ]; then
    echo "crashed: ${failed[*]}" >&2
    for t in "${failed[@]}"; do
        grep -m1 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "artifacts/logs/$t.log" >&2
        # Reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s $SAN $t artifacts/$t/<file>
    done
    exit 1
fi
