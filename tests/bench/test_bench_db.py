"""A route bench flushes only a database that is empty or that a bench marked, unless told
to (real Redis): pointed at someone's data by mistake, it exits naming the way out and
leaves the data alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from bench import bench_db


@pytest.fixture
def client(redis_db: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_db)
    try:
        yield connection
    finally:
        connection.close()


@pytest.mark.redis
def test_an_empty_database_is_claimed_and_marked(client: redis.Redis, redis_db: str) -> None:
    bench_db.claim(client, redis_db)
    assert client.exists(bench_db.MARK)
    assert client.dbsize() == 1


@pytest.mark.redis
def test_a_database_with_data_and_no_mark_is_refused_and_kept(
    client: redis.Redis, redis_db: str
) -> None:
    client.set("orders:1", "someone's data")
    with pytest.raises(SystemExit) as refused:
        bench_db.claim(client, redis_db)
    assert bench_db.FLUSH_FLAG in str(refused.value)
    assert redis_db in str(refused.value)
    assert client.get("orders:1") == b"someone's data"


@pytest.mark.redis
def test_a_marked_database_is_flushed_again(client: redis.Redis, redis_db: str) -> None:
    bench_db.claim(client, redis_db)
    client.set("dsp:{bench}:leftover", "from the last run")
    bench_db.claim(client, redis_db)
    assert not client.exists("dsp:{bench}:leftover")
    assert client.exists(bench_db.MARK)


@pytest.mark.redis
def test_the_flag_flushes_a_database_without_the_mark(client: redis.Redis, redis_db: str) -> None:
    client.set("orders:1", "disposable")
    bench_db.claim(client, redis_db, force=True)
    assert not client.exists("orders:1")
    assert client.exists(bench_db.MARK)
