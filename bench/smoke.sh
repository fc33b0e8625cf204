#!/usr/bin/env bash
# Every bench in bench/, once, with tiny parameters: CI runs this after the tests (.ci/run).
# Each line must exit non-zero when its bench fails or one of its expectations is violated
# (the benches take --check for that). OTHER BENCHES: add your own tiny line(s) below, one
# bench per section, seconds not minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

run() {
  printf '\n--> %s\n' "$*"
  "$PY" "$@"
}

# -- bench/ledger.py: memory, redis, and each fault flag (its own redis-server; PostgreSQL at
#    127.0.0.1:5432 unless BENCH_DATABASE_URL says otherwise). Tiny runs cannot show speed
#    (10 callers do not batch, 2 s do not average), so --no-speed-checks: every other
#    expectation (over-admission, journal exactness, deadlines) is enforced.
DB=(--database-url "${BENCH_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}")
run -m bench.ledger --check --no-speed-checks --json "${DB[@]}" \
  --backend memory --replicas 1 --callers 10 --seconds 2
run -m bench.ledger --check --no-speed-checks --json "${DB[@]}" \
  --backend redis --replicas 2 --callers 10 --seconds 2
run -m bench.ledger --check --no-speed-checks --json "${DB[@]}" \
  --backend redis --replicas 2 --callers 10 --seconds 2 --kill-replica
run -m bench.ledger --check --no-speed-checks --json "${DB[@]}" \
  --backend redis --replicas 2 --callers 10 --seconds 3 --redis-outage 1

# -- bench/relay.py: every event delivered exactly once, resumes included (memory and Redis).
run -m bench.relay --check --json --tasks 20 --awaiters 20 --disconnect-rate 0.5
run -m bench.relay --check --json --tasks 20 --awaiters 20 --disconnect-rate 0.5 \
  --backend redis --redis-url "${BENCH_REDIS_URL:-redis://127.0.0.1:6379/15}"

# -- bench/heartbeats.py: one real dispatcher process, every agent stream held and every
#    report acked (and the bare grpc.aio baseline beside it).
run -m bench.heartbeats --check --json --streams 50 --interval 1 --seconds 3

# -- bench/route.py: Route over gRPC on the Redis ledger beside an empty grpc.aio handler;
#    --check fails on errors only (any non-OK Route / Release, a server that died), not speed.
#    Both route benches flush their database; the default one, 14 on CI's own Redis, may
#    hold keys of a run from before the benches marked it (bench/bench_db.py): flush it
#    anyway. A database given in BENCH_ROUTE_REDIS_URL keeps the benches' refusal.
route_db="${BENCH_ROUTE_REDIS_URL:-redis://127.0.0.1:6379/14}"
flush_default_db=()
[ -z "${BENCH_ROUTE_REDIS_URL:-}" ] && flush_default_db=(--flush-redis)
run -m bench.route --check --json --seconds 2 --rounds 1 --callers 8 \
  --redis-url "$route_db" "${flush_default_db[@]}"

# -- bench/route_handlers.py: the dispatcher's own Python per Route + Release, in-process on
#    the Redis ledger (no gRPC); --check fails on errors only.
run -m bench.route_handlers --check --json --pairs 200 --rounds 1 --concurrency 8 \
  --redis-url "$route_db" "${flush_default_db[@]}"

# -- bench/journal_drain.py: the journal consumer's CPU per event against its source alone;
#    --check fails on an event lost or not stored, not on speed.
run -m bench.journal_drain --check --json --pairs 200 --rounds 1 \
  --redis-url "$route_db" "${flush_default_db[@]}"

# -- bench/simulate.py and bench/engine_speed.py: the routing simulator on a tiny fleet for a
#    few simulated minutes, and the in-process engine for a second.
run -m bench.simulate --json --caps 8,4 --load 0.8 --replicas 2 --heartbeat 5 --hours 0.05 \
  --seeds 1 >/dev/null
run -m bench.engine_speed --clusters 100 --seconds 1
