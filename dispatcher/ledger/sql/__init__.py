"""The durable ledger on SQL (PostgreSQL, or SQLite embedded) and the journal consumer.

- ``models``: the schema; ``migrate``: alembic, located at runtime; ``engine``: ``open_engine``
  and ``DurableLedger``; ``projection``: journal events → reservation rows;
  ``consumer``: journal → SQL copier; ``redis_source``: the Redis-stream journal source.
"""
