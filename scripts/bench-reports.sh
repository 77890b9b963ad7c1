#!/usr/bin/env bash
# Issue 12's report-engine benchmarks, every scenario in sequence, in one run.
# Prints `uptime` first (and last): the figures are ratios of wall time, so the load
# of the machine while they ran belongs with them.
#
# Usage: scripts/bench-reports.sh [path/to/marketsync]
#   default binary: $CARGO_TARGET_DIR/release/marketsync (or target/release/marketsync);
#   build it first with `cargo build --release`.
# STEADY_HOURS (default 2): hours of steady state after the realistic backfill; they
# complete on the real clock, so each is up to a real hour of waiting (0 skips it).
# Exit status: non-zero when any scenario misses its target.
set -u
cd "$(dirname "$0")/.."
binary="${1:-${CARGO_TARGET_DIR:-target}/release/marketsync}"
if [[ ! -x "$binary" ]]; then
    echo "bench-reports.sh: $binary: no such executable; run cargo build --release first" >&2
    exit 2
fi
echo "uptime: $(uptime)"
"$binary" --version 2>/dev/null || true
git log -1 --format='commit %h %s' 2>/dev/null || true
status=0
for scenario in head-of-line head-of-line-1000 latency-backfill unknown-burst; do
    "$binary" bench reports --scenario "$scenario" || status=1
done
"$binary" bench reports --scenario realistic --steady-hours "${STEADY_HOURS:-2}" || status=1
echo
echo "uptime: $(uptime)"
exit "$status"
