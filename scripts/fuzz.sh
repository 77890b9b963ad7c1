#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints its executions and findings.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 120 s, all targets)
# Needs cargo-fuzz and a nightly toolchain. Seeds: the shipped configuration files.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
mkdir -p fuzz/corpus/config_loader
cp config/*.toml fuzz/corpus/config_loader/ 2>/dev/null || true
status=0
for target in "${targets[@]}"; do
    log="fuzz/${target}.log"
    echo "== ${target}: ${seconds}s"
    if (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536) >"$log" 2>&1; then
        echo "   no findings"
    else
        echo "   FINDING: see $log and fuzz/artifacts/$target/"
        status=1
    fi
    grep -E "^(#[0-9]+\s+DONE|Done [0-9]+ runs)" "$log" | tail -1 | sed 's/^/   /' || true
done
exit $status
