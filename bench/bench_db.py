"""The Redis database a route bench may flush: an empty one, or one an earlier run marked.

``bench.route`` and ``bench.route_handlers`` start from an empty database (a dispatcher's
state left from an earlier run would be measured too), so they flush the one they are
given. A ``--redis-url`` pointed by mistake at a database that holds someone's data must
not lose it: a database with keys is flushed only when it carries the mark a bench left
there after flushing it before, or when the caller says ``--flush-redis``.
"""

from __future__ import annotations

import argparse

import redis

MARK = "bench:flushable"  # outside the dispatcher's own key space (``dsp:…``)
FLUSH_FLAG = "--flush-redis"


def add_flush_flag(parser: argparse.ArgumentParser) -> None:
    """The benches' ``--flush-redis`` (``args.flush_redis``): flush even an unmarked database."""
    parser.add_argument(
        FLUSH_FLAG, action="store_true", help="flush --redis-url even if not a bench's"
    )


def claim(client: redis.Redis, url: str, *, force: bool = False) -> None:
    """Flush the database behind ``client`` and mark it as a bench's, or exit naming why."""
    keys = int(client.dbsize())
    if keys and not force and not client.exists(MARK):
        raise SystemExit(
            f"{url} holds {keys:,} keys, and no {MARK} key says a bench left them; this bench "
            f"flushes the database it runs on: pass {FLUSH_FLAG} if they may go, or give "
            f"--redis-url another database."
        )
    client.flushdb()
    client.set(MARK, "1")
