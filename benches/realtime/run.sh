#!/usr/bin/env bash
# Realtime benchmarks (figures in docs/REALTIME.md). Release builds; everything on loopback.
#   benches/realtime/run.sh frames RATE [nats]      frame -> nudge latency, open loop, 20 clients, 10 s
#   benches/realtime/run.sh audio STREAMS [nats]    segment end -> server.speaker latency, real-time speech streams, 30 s
#   benches/realtime/run.sh idle SOCKETS [nats]     gateway resident memory holding SOCKETS idle WebSockets
# Embedded default unless `nats`: then NATS (4222), Redis (6379) and PostgreSQL (5432) with one
# gateway and one worker process. Audio needs a model: ECAPA_MODEL_DIR, else a full-size
# random-weight one is written to /var/tmp/ecapa_full by `random_model`.
# Knobs: CLIENTS, PROBE_EVERY, DURATION, DRAIN (frames: seconds to wait for the last nudges, 2), PORT, SESSION_SOCKETS (idle: sockets per session, 20;
# 2 is one per member, 5,000 sessions for 10,000 sockets), LIMIT=S (the production nudge limit,
# NUDGE_RATE_LIMIT_SECONDS; default 0 so every probe comes back; with it on, loss is frames the
# worker did not process and latencies are those of the nudges the limit let out; the clients' windows are staggered), FLOOR=0 (no raw-NATS floor run before frames on NATS); LATENCY_LOG=FILE keeps each probe's send time and
# latency; NATS_AUTH=1 (nats: the servers log in to a nats-server of the run's own with the shipped
# deploy/nats/nats-server.conf, identities and permissions on; NATS_GOMAXPROCS=N runs that server with
# GOMAXPROCS=N, deploy/nats/README.md "Sharing a small machine"; NATS_SERVER=PATH runs that binary,
# another nats-server release, instead of the one on PATH); GATEWAY_WRAP / WORKER_WRAP prefix a server's command (`perf record -o F --`, `env X=1`).
# Every frames run ends with a `machine:` line (loopback round trip on one CPU and across two, CPU
# stolen by the host while sending): read the figures beside it (docs/REALTIME.md, "slow hour").
# On NATS it also prints the CPU seconds nats-server, redis-server and PostgreSQL used during the
# run (the whole of each shared service), to show how near the machine came to saturation.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:?usage: run.sh frames RATE [nats] | audio STREAMS [nats] | idle SOCKETS}
n=${2:?a rate, stream or socket count}
mode=${3:-embedded}
port=${PORT:-18100}
target=${CARGO_TARGET_DIR:-target}
# both act on the run's own nats-server, which only NATS_AUTH=1 starts: never ignore them silently
for knob in NATS_SERVER NATS_GOMAXPROCS; do
  if [ -n "${!knob:-}" ] && { [ "$mode" != nats ] || [ "${NATS_AUTH:-0}" != 1 ]; }; then
    echo "$knob applies to the run's own nats-server: add NATS_AUTH=1 and \`nats\`" >&2
    exit 2
  fi
done
if [ -n "${NATS_SERVER:-}" ] && ! command -v "$NATS_SERVER" >/dev/null; then
  echo "NATS_SERVER=$NATS_SERVER: no such program" >&2
  exit 2
fi
cargo build --release -q -p inside-server -p inside-workers -p inside-benches --bins
if curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
  echo "port $port is already serving (an earlier run still going?): set PORT or stop it" >&2
  exit 1
fi
data=$(mktemp -d)
pids=()
nats_pid=""
db=""
stream=""
cleanup() {
  # a GATEWAY_WRAP / WORKER_WRAP that forks (`perf stat --`) is not the server: stop the
  # server under it, so the wrapper reports and ends instead of leaving the server on the port
  for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null
  wait 2>/dev/null || true
  [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  # and the run's report-job and events streams, which JetStream would keep (per subject prefix)
  if [ -n "$stream" ] && exec 3<>/dev/tcp/127.0.0.1/4222; then
    printf 'CONNECT {"verbose":false}\r\nPUB $JS.API.STREAM.DELETE.%s_JOBS 0\r\n\r\nPUB $JS.API.STREAM.DELETE.%s_EVENTS 0\r\n\r\nPING\r\n' "$stream" "$stream" >&3
    timeout 2 grep -qm1 PONG <&3 || true
    exec 3>&-
  fi
  # the servers' logs outlive the run, for a look after a failure
  mkdir -p /tmp/inside-bench-logs && cp "$data"/*.log /tmp/inside-bench-logs/ 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
export SECRET_KEY="bench-secret-0123456789abcdef0123456789" DATA_DIR="$data" RUST_LOG=warn \
  BCRYPT_COST=4 NUDGE_RATE_LIMIT_SECONDS=${LIMIT:-0} LOGIN_MAX_FAILURES=10000 BIND_ADDR="127.0.0.1:$port"
# one load generator on 127.0.0.1 stands for thousands of phones: no per-address or per-user caps
export SIGNUP_MAX_PER_ADDRESS=1000000 WEBSOCKET_MAX_SOCKETS_PER_CLIENT=0 WEBSOCKET_MAX_SOCKETS_PER_USER=0 HTTP_MAX_CONNECTIONS_PER_CLIENT=0
if [ "$what" = audio ]; then
  if [ -z "${ECAPA_MODEL_DIR:-}" ]; then
    export ECAPA_MODEL_DIR=/var/tmp/ecapa_full
    [ -f "$ECAPA_MODEL_DIR/embedding_model.safetensors" ] || [ -f "$ECAPA_MODEL_DIR/embedding_model.ckpt" ] \
      || "$target/release/random_model" "$ECAPA_MODEL_DIR"
  fi
  export SPEAKER_MATCH_THRESHOLD=-1
fi
nats_args=()
worker_args=()
if [ "$mode" = nats ]; then
  db="inside_rt_bench_$(date +%s)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
  export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" NATS_URL=nats://127.0.0.1:4222 \
    REDIS_URL=redis://127.0.0.1:6379 NATS_SUBJECT_PREFIX="bench$(date +%s)"
  # as `Subjects::jobs_stream` and `events_stream` name them (the prefix upper-cased, `.` and
  # `-` as `_`, then `_JOBS`, `_EVENTS`); set only
  # once the prefix is this run's own, so the cleanup never deletes a caller's stream
  stream="$(printf '%s' "${NATS_SUBJECT_PREFIX^^}" | tr '.-' '__')"
  nats_args=(--nats-url "$NATS_URL")
  if [ "${NATS_AUTH:-0}" = 1 ]; then
    # the shipped secured configuration (identities, per-role subject permissions) on a
    # nats-server of the run's own; the raw-NATS floor and round trip stay on the open one
    auth_port=$((port + 2))
    INSIDE_NATS_GATEWAY_PASSWORD=bench-gateway-pw INSIDE_NATS_WORKER_PASSWORD=bench-worker-pw \
      INSIDE_NATS_RESEARCHER_PASSWORD=bench-researcher-pw INSIDE_NATS_STORE_DIR="$data/jetstream" \
      env ${NATS_GOMAXPROCS:+GOMAXPROCS=$NATS_GOMAXPROCS} "${NATS_SERVER:-nats-server}" -c deploy/nats/nats-server.conf -a 127.0.0.1 -p "$auth_port" >"$data/nats.log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$auth_port") 2>/dev/null && break; sleep 0.1; done
    export NATS_URL="nats://127.0.0.1:$auth_port"
    stream=""
  fi
  # the same rate on raw NATS first, as the machine's floor at this hour (FLOOR=0: skip it)
  [ "$what" = frames ] && [ "${FLOOR:-1}" != 0 ] && nats_args+=(--nats-floor)
  worker_args=(--worker-metrics "http://127.0.0.1:$((port + 1))/metrics")
  # the release matters where nudges are many (docs/benchmarks/2026-12-08-nats-releases.md):
  # name the one the servers use, from its INFO line
  nats_port=${NATS_URL##*:}
  if exec 3<>/dev/tcp/127.0.0.1/"$nats_port"; then
    echo "nats-server: $(timeout 2 head -n 1 <&3 | grep -o '"version":"[^"]*"' | cut -d'"' -f4) on port $nats_port"
    exec 3>&-
  fi
  # the gateway needs no model with NATS: the worker embeds
  gateway_id=() worker_id=()
  if [ "${NATS_AUTH:-0}" = 1 ]; then
    gateway_id=(NATS_USER=gateway NATS_PASSWORD=bench-gateway-pw)
    worker_id=(NATS_USER=worker NATS_PASSWORD=bench-worker-pw)
  fi
  env "${gateway_id[@]}" ECAPA_MODEL_DIR= ${GATEWAY_WRAP:-} "$target/release/gateway" >"$data/gateway.log" 2>&1 &
  pids+=($!)
  env "${worker_id[@]}" WORKER_BIND_ADDR=127.0.0.1:$((port + 1)) ${WORKER_WRAP:-} "$target/release/worker" >"$data/worker.log" 2>&1 &
  pids+=($!)
else
  RUST_LOG=${GATEWAY_LOG:-warn,gateway=info} ${GATEWAY_WRAP:-} "$target/release/gateway" >"$data/gateway.log" 2>&1 &
  pids+=($!)
fi
gw=${pids[0]}
base="http://127.0.0.1:$port"
for _ in $(seq 1 300); do curl -fs "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$base/health" >/dev/null || { echo "gateway did not start:" >&2; cat "$data"/*.log >&2; exit 1; }
sleep 1
load="$target/release/loadgen"
# CPU seconds (user+system) each server process has used so far
# and context switches of all their threads (each a thread parked and woken again)
cpu() {
  for p in "${pids[@]}"; do
    awk -v p="$p" '{printf "pid%s_cpu_s=%.2f ", p, ($14+$15)/100}' "/proc/$p/stat"
    cat /proc/"$p"/task/*/status | awk -v p="$p" '/ctxt_switches/ {n += $2} END {printf "pid%s_ctx_switches=%d ", p, n}'
  done
  echo
}
# CPU seconds the bus and Redis use during a run (every process of that name: the services are
# shared, so the delta is the run's), to see how near the machine is to saturation
services_cpu() {
  for name in nats-server redis-server postgres; do
    pgrep -x "$name" | while read -r p; do awk -v n="$name" '{print n, ($14+$15)/100}' "/proc/$p/stat" 2>/dev/null; done
  done | awk '{s[$1] += $2} END {for (n in s) printf "%s %.2f\n", n, s[n]}'
}
case "$what" in
  frames)
    [ "$mode" = nats ] && services_before=$(services_cpu)
    "$load" --url "$base" --clients "${CLIENTS:-20}" --rate "$n" --duration "${DURATION:-10}" --probe-every "${PROBE_EVERY:-1}" --drain "${DRAIN:-2}" --nudge-window "${LIMIT:-0}" "${nats_args[@]}" "${worker_args[@]}" \
      ${LATENCY_LOG:+--latency-log "$LATENCY_LOG"}
    echo "server cpu after run (gateway first): $(cpu)"
    if [ "$mode" = nats ]; then
      # postgres backends that ended during the run are not counted
      echo "services cpu during run: $(join -a2 <(sort <<<"$services_before") <(services_cpu | sort) \
        | awk '{printf "%s_cpu_s=%.2f ", $1, (NF == 3 ? $3 - $2 : $2)}')"
    fi
    ;;
  audio)
    "$load" --url "$base" --audio-streams "$n" --duration "${DURATION:-30}" --drain 5
    ;;
  idle)
    rss() { awk '/VmRSS/ {print $2}' "/proc/$gw/status"; }
    worker_rss() { [ "${#pids[@]}" -gt 1 ] && awk '/VmRSS/ {printf " worker_rss_kib=%s", $2}' "/proc/${pids[1]}/status"; true; }
    before=$(rss)
    worker_before=$(worker_rss)
    "$load" --url "$base" --idle-sockets "$n" --session-sockets "${SESSION_SOCKETS:-20}" --duration "${DURATION:-20}" 2>"$data/idle.err" &
    lg=$!
    # after the sign-ups and sessions, before the first socket: what the sockets add
    until grep -q SET-UP "$data/idle.err" 2>/dev/null; do
      kill -0 "$lg" 2>/dev/null || { cat "$data/idle.err" >&2; exit 1; }
      sleep 0.2
    done
    set_up=$(rss)
    until grep -q READY "$data/idle.err" 2>/dev/null; do
      kill -0 "$lg" 2>/dev/null || { cat "$data/idle.err" >&2; exit 1; }
      sleep 0.5
    done
    # past one presence heartbeat (5 s) on NATS, whose per-session work is part of the cost
    sleep "${SETTLE:-6}"
    after=$(rss)
    echo "gateway_rss_before_kib=$before gateway_rss_set_up_kib=$set_up gateway_rss_holding_kib=$after holding_mb=$(( after * 1024 / 1000000 )) added_mb=$(( (after - before) * 1024 / 1000000 )) per_socket_bytes=$(( (after - before) * 1024 / n )) sockets_added_mb=$(( (after - set_up) * 1024 / 1000000 )) per_socket_after_set_up_bytes=$(( (after - set_up) * 1024 / n ))"
    [ -n "$worker_before" ] && echo "worker before:$worker_before holding:$(worker_rss)"
    grep -m1 "open-files" "$data/gateway.log" || true
    wait "$lg"
    ;;
  *) echo "unknown benchmark $what" >&2; exit 2 ;;
esac
