#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ for a bounded time each and prints, per target,
# the executions and the findings (crash, leak, timeout and OOM artifacts). Not part of
# scripts/test.sh: it needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh                    every target, 60 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh   longer
#   scripts/fuzz.sh report_document    only the named targets
#
# Exit status: 0 when no target found anything, 1 otherwise, 2 when it could not run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${FUZZ_SECONDS:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || (( seconds > 86400 )); then
    echo "fuzz.sh: FUZZ_SECONDS=$seconds is not a whole number of seconds from 1 to 86400" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz or the nightly toolchain is missing; run: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi

cd "$root/fuzz"
if (( $# > 0 )); then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
if (( ${#targets[@]} == 0 )); then
    echo "fuzz.sh: no fuzz targets under fuzz/" >&2
    exit 2
fi

# Seeds: the shipped configuration files for the config loader.
mkdir -p "$root/fuzz/corpus/config_loader"
cp "$root"/config/*.toml "$root/fuzz/corpus/config_loader/" 2>/dev/null || true

found_any=0
summary=()
for target in "${targets[@]}"; do
    log="$(mktemp)"
    artifacts="$root/fuzz/artifacts/$target"
    mkdir -p "$artifacts" "$root/fuzz/corpus/$target"
    before=$(find "$artifacts" -type f | wc -l)
    echo "== $target: ${seconds}s"
    # -rss_limit_mb: the parser must stay far below it whatever the input.
    set +e
    cargo +nightly fuzz run -O "$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1
    status=$?
    set -e
    executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    after=$(find "$artifacts" -type f | wc -l)
    findings=$((after - before))
    if (( status != 0 && findings == 0 )); then
        # A failure that left no artifact (a build error, a setup problem): show it.
        tail -40 "$log"
        findings=1
    fi
    if (( findings > 0 )); then
        found_any=1
        grep -E '^(==[0-9]+==|SUMMARY|artifact_prefix|Test unit written)' "$log" | tail -20 || true
    fi
    summary+=("$target: executions=${executions:-?} peak_rss_mb=${peak:-?} findings=$findings exit=$status")
    rm -f "$log"
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if (( found_any )); then
    echo "findings are in fuzz/artifacts/<target>/; replay one with: cargo +nightly fuzz run <target> <file>"
fi
exit "$found_any"
