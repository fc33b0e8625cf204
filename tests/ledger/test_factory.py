"""open_ledger picks the backend from the URL scheme."""

from __future__ import annotations

import pytest

from dispatcher.errors import ConfigError
from dispatcher.ledger import open_ledger
from dispatcher.ledger.fallback import FailoverLedger
from dispatcher.ledger.memory import MemoryLedger
from dispatcher.ledger.redis_backend import RedisLedger
from tests.ledger.helpers import spec


async def test_memory_url_opens_the_memory_ledger() -> None:
    ledger = await open_ledger("memory://", [spec(tpm=1000)])
    assert isinstance(ledger, MemoryLedger)
    await ledger.aclose()


async def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"hot_store\.url"):
        await open_ledger("ftp://x", [spec(tpm=1000)])


@pytest.mark.redis
async def test_redis_url_opens_redis_with_failover(redis_db: str) -> None:
    ledger = await open_ledger(redis_db, [spec(tpm=1000)], replicas=3)
    assert isinstance(ledger, FailoverLedger)
    await ledger.aclose()
    bare = await open_ledger(redis_db, [spec(tpm=1000)], failover=False)
    assert isinstance(bare, RedisLedger)
    await bare.aclose()
