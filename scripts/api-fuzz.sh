#!/usr/bin/env bash
# Property-based test of the HTTP API against its OpenAPI document (docs/openapi.json, as
# served at /api/openapi.json): schemathesis generates requests for every operation (valid
# and invalid path, query and body values) and sends them to a running daemon (the real
# binary with config/demo.toml: every provider served by the embedded simulator), with the
# admin token so the write endpoints are exercised too. It fails on any 5xx, any status the
# document does not list, any content type it does not list, and any answer that does not
# match its schema. The daemon's log must show no panic, and the daemon must stop cleanly.
#
# Environment:
#   MARKETSYNC_BIN         the binary to run (default: target/debug/marketsync, built first)
#   API_FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 20: about 2 minutes here)
#   API_FUZZ_SEED          a seed to replay a run (schemathesis prints the one it used)
#
# The virtualenv with the pinned schemathesis is kept in target/api-fuzz/venv; reports
# (JUnit, and the daemon's log) go to target/api-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
out=target/api-fuzz
venv="${out}/venv"

log() { printf '== api-fuzz: %s\n' "$*" >&2; }

mkdir -p "${out}"
rm -f "${out}"/junit-*.xml "${out}/self-check.log"
if ! "${venv}/bin/schemathesis" --version 2>/dev/null | grep -qF "version ${SCHEMATHESIS_VERSION}"; then
  log "installing schemathesis ${SCHEMATHESIS_VERSION} into ${venv}"
  rm -rf "${venv}"
  if ! python3 -m venv "${venv}" >/dev/null 2>&1; then
    log "python3 -m venv failed; installing python3-venv"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    fi
    python3 -m venv "${venv}"
  fi
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
fi

binary="${MARKETSYNC_BIN:-}"
if [ -z "${binary}" ]; then
  # With the features the test build uses ('testing' only adds the tests' manual clocks),
  # so after `cargo nextest run` this reuses its build instead of compiling the crate again.
  log "building target/debug/marketsync"
  cargo build --quiet --bin marketsync --features testing
  binary=target/debug/marketsync
fi

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
config="${work}/api-fuzz.toml"
sed -e "s|^data_dir = .*|data_dir = \"${work}/data\"|" \
    -e "s|^listen = \"127.0.0.1:8080\"|listen = \"127.0.0.1:${port}\"|" \
    config/demo.toml >"${config}"
grep -q "listen = \"127.0.0.1:${port}\"" "${config}" || { log "cannot set the listen port in ${config}"; exit 1; }

daemon_log="${out}/daemon.log"
MARKETSYNC_ADMIN_TOKEN="${token}" "${binary}" run --config "${config}" >"${daemon_log}" 2>&1 &
daemon=$!

stop_daemon() {
  if kill -0 "${daemon}" 2>/dev/null; then
    kill -TERM "${daemon}" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "${daemon}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${daemon}" 2>/dev/null; then
      log "the daemon did not stop within 30s of SIGTERM; killing it"
      kill -KILL "${daemon}" 2>/dev/null || true
    fi
  fi
}
cleanup() {
  stop_daemon
  wait "${daemon}" 2>/dev/null || true
  rm -rf "${work}"
}
trap cleanup EXIT

base="http://127.0.0.1:${port}"
log "waiting for the daemon on ${base}"
ready=0
for _ in $(seq 1 600); do
  if curl -fsS -o /dev/null --max-time 2 "${base}/api/status"; then
    ready=1
    break
  fi
  kill -0 "${daemon}" 2>/dev/null || break
  sleep 0.1
done
if [ "${ready}" != 1 ]; then
  log "the daemon did not answer within 60s; its log:"
  cat "${daemon_log}" >&2
  exit 1
fi

seed_args=()
if [ -n "${API_FUZZ_SEED:-}" ]; then
  seed_args=(--seed "${API_FUZZ_SEED}")
fi

log "schemathesis ${SCHEMATHESIS_VERSION} against ${base}/api/openapi.json"
status=0
# From inside target/api-fuzz: schemathesis keeps its cache (.schemathesis/) in the
# working directory, which must not be the repository.
(cd "${out}" && timeout 600 venv/bin/schemathesis run "${base}/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --header "Authorization: Bearer ${token}" \
  --max-examples "${API_FUZZ_MAX_EXAMPLES:-20}" \
  --workers 2 \
  --request-timeout 30 \
  --generation-database none \
  --report junit --report-dir . \
  --no-color \
  "${seed_args[@]}") || status=$?

# The checks must be able to fail: the same run on one operation of a document that
# wrongly requires a field no status answer has must report a failure.
if [ "${status}" = 0 ]; then
  log "self-check: a schema the answers do not match must fail"
  curl -fsS --max-time 10 "${base}/api/openapi.json" | python3 -c '
import json, sys
document = json.load(sys.stdin)
schema = document["components"]["schemas"]["StatusDocument"]
schema["required"] = schema.get("required", []) + ["field_no_answer_has"]
json.dump(document, sys.stdout)
' >"${work}/wrong.json"
  if (cd "${out}" && timeout 300 venv/bin/schemathesis run "${work}/wrong.json" --url "${base}" \
      --include-path /api/status --phases examples,fuzzing --max-examples 1 \
      --checks response_schema_conformance --generation-database none --no-color \
      >self-check.log 2>&1); then
    log "self-check failed: schemathesis passed a schema the answers do not match (see ${out}/self-check.log)"
    status=1
  elif ! grep -q "field_no_answer_has" "${out}/self-check.log"; then
    log "self-check failed: schemathesis failed for another reason (see ${out}/self-check.log)"
    status=1
  fi
fi

stop_daemon
code=0
wait "${daemon}" || code=$?
if grep -q "panicked" "${daemon_log}"; then
  log "the daemon's log shows a panic:"
  grep -n "panicked" "${daemon_log}" >&2
  status=1
fi
if [ "${code}" != 0 ]; then
  log "the daemon exited ${code} after SIGTERM (expected 0); the end of its log:"
  tail -n 40 "${daemon_log}" >&2
  status=1
fi
if [ "${status}" != 0 ]; then
  log "failed (daemon log: ${daemon_log}, JUnit report: ${out}/junit-*.xml)"
else
  log "passed"
fi
exit "${status}"
