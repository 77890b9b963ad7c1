#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
# Installs what a fresh machine lacks (rustfmt/clippy components, cargo-nextest, redis-server,
# chromium and chromedriver for the dashboard tests; scripts/api-fuzz.sh installs a pinned
# schemathesis into target/api-fuzz/venv).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
      log "installing rust component ${component}"
      rustup component add "${component}"
    fi
  done
fi

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server (tests start their own instances)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
  fi
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing chromium and chromedriver (the dashboard tests drive it headless and click its buttons)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
fi

# tests/suite/netns.rs runs daemons as hosts in network namespaces (`ip netns`, veth, a
# bridge: needs root, which CI has; without root those tests fail saying so) against a
# private PostgreSQL (initdb/postgres, run as the postgres user) and redis-server.
if ! command -v ip >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1 || ! command -v setpriv >/dev/null 2>&1; then
  log "installing iproute2 and util-linux (the multi-host tests use ip netns, unshare and setpriv)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux
  fi
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "installing postgresql (the multi-host tests start their own server with initdb)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  # tests/suite/ops.rs runs `systemd-analyze verify` on contrib/systemd/marketsync.service
  # (and checks the file textually only, saying so, when the tool is absent).
  log "installing systemd (for systemd-analyze verify)"
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null || log "systemd not installed; the unit is checked textually only"
  else
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null || log "systemd not installed; the unit is checked textually only"
  fi
fi

# The PostgreSQL store's tests (src/store/contract_tests.rs, src/store/postgres/tests.rs,
# tests/suite/postgres.rs) use the server at MARKETSYNC_TEST_PG_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) and fail, saying how to start it, when it
# does not answer. The machines start one; start it again if it stopped.
if [ -z "${MARKETSYNC_TEST_PG_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 \
  && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "postgresql at 127.0.0.1:5432 does not answer; starting the machine's cluster"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "${version}")" main start || true
    done
  fi
fi

log "contrib/grafana/marketsync.json is valid JSON (tests/suite/ops.rs checks its queries against a live /metrics)"
python3 -m json.tool contrib/grafana/marketsync.json >/dev/null

runner=(cargo test)
if cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked >/dev/null 2>&1; then
  runner=(cargo nextest run --no-fail-fast)
fi

log "layering check (scripts/check-layers.py; the order is in docs/architecture.md)"
python3 scripts/check-layers.py --self-test
python3 scripts/check-layers.py

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The product as built for release: without the 'testing' feature the test helpers
# (manual clocks) are compiled out, and it must still build cleanly.
log "cargo clippy --lib --bins -- -D warnings (without test helpers)"
cargo clippy --lib --bins -- -D warnings

log "tests: ${runner[*]}"
"${runner[@]}" --all-targets

# The HTTP API against its OpenAPI document: schemathesis (pinned, in a venv under target/)
# sends generated requests to the real daemon; no 5xx, every answer as documented.
log "property-based API test (scripts/api-fuzz.sh)"
scripts/api-fuzz.sh

# The documented install works (a debug build, reusing most of the tests' build; the
# release profile is the same code with line tables only).
log "cargo install --path . (debug, into a temporary root)"
install_root="$(mktemp -d)"
cargo install --path . --debug --locked --quiet --root "${install_root}"
"${install_root}/bin/marketsync" --version
rm -rf "${install_root}"
