#!/usr/bin/env bash
# HTTP benchmarks of the gateway on PostgreSQL (issue figures in README.md).
#   benches/http/run.sh users-me      wrk -t2 -c64 on GET /v1/users/me
#   benches/http/run.sh login-storm   8 clients log in back to back (bcrypt cost 12) while GET /v1/users/me is measured
#   benches/http/run.sh signup-1000   1,000 signups, 16 at a time: counts statuses
#   benches/http/run.sh signup-flood  login p50/p99 while FLOOD (32) clients sign up back to back
#                                     from their own 127.0.1.x addresses (bcrypt cost 12); the
#                                     per-address signup limit is off unless SIGNUP_MAX_PER_ADDRESS is set
# GATEWAY_BIN=path runs another gateway binary (e.g. an older build, to compare);
# FLOOD_BIN=path another signup_flood (e.g. a debug build).
# Needs: wrk, curl, PostgreSQL on 127.0.0.1:5432 (scripts/services). Builds the release gateway if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:?usage: run.sh users-me|login-storm|signup-1000|signup-flood}
duration=${DURATION:-20s}
port=${PORT:-18000}
target=${CARGO_TARGET_DIR:-target}
[ -n "${GATEWAY_BIN:-}" ] || [ -x "$target/release/gateway" ] || cargo build --release -p inside-gateway
if [ "$what" = signup-flood ] && [ -z "${FLOOD_BIN:-}" ]; then
  [ -x "$target/release/signup_flood" ] || cargo build --release -p inside-benches --bin signup_flood
fi
db="inside_bench_$(date +%s)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
data=$(mktemp -d)
DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" SECRET_KEY="bench-secret-0123456789abcdef0123456789" \
  BIND_ADDR="127.0.0.1:$port" DATA_DIR="$data" RUST_LOG=warn DATABASE_MAX_CONNECTIONS=${DB_CONNS:-4} \
  LOGIN_MAX_FAILURES=10000 SIGNUP_MAX_PER_ADDRESS=${SIGNUP_MAX_PER_ADDRESS:-1000000} "${GATEWAY_BIN:-$target/release/gateway}" >"$data/gateway.log" 2>&1 &
gw=$!
cleanup() { kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null; psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1; rm -rf "$data"; }
trap cleanup EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -fs "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$base/health" >/dev/null || { echo "gateway did not start:" >&2; cat "$data/gateway.log" >&2; exit 1; }
signup() { curl -fs -X POST "$base/v1/auth/signup" -H 'content-type: application/json' -d "{\"email\":\"$1\",\"password\":\"bench-password\",\"name\":\"Bench\"}"; }
token=$(signup "bench@example.com" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
here=benches/http
case "$what" in
  users-me)
    wrk -t2 -c64 -d"$duration" --latency -H "Authorization: Bearer $token" "$base/v1/users/me"
    ;;
  login-storm)
    echo "== 8 clients logging in back to back (bcrypt cost 12) =="
    wrk -t1 -c8 -d"$duration" --timeout 30s --latency -s "$here/login.lua" "$base/v1/auth/login" >"$data/login.txt" &
    storm=$!
    sleep 2
    echo "== GET /v1/users/me meanwhile (wrk -t1 -c16) =="
    wrk -t1 -c16 -d"$(( ${duration%s} - 4 ))s" --latency -H "Authorization: Bearer $token" "$base/v1/users/me"
    wait "$storm"
    echo "== the logins =="
    cat "$data/login.txt"
    ;;
  signup-1000)
    start=$(date +%s.%N)
    seq 1 1000 | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST "$base/v1/auth/signup" \
      -H 'content-type: application/json' -d '{"email":"user{}@bench.example","password":"bench-password","name":"U{}"}' \
      | sort | uniq -c
    echo "elapsed: $(echo "$(date +%s.%N) - $start" | bc) s"
    grep -ci "pool\|timed out" "$data/gateway.log" | sed 's/^/log lines mentioning pool or timeouts: /' || true
    ;;
  signup-flood)
    "${FLOOD_BIN:-$target/release/signup_flood}" --url "$base" --flood-clients "${FLOOD:-32}" --duration "${duration%s}"
    ;;
  *) echo "unknown benchmark $what" >&2; exit 2 ;;
esac
