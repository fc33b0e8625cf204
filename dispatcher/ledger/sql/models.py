"""SQLAlchemy models of the durable ledger: the journal, its reservation projection, settings.

One schema for PostgreSQL and SQLite, so only portable types appear here (``JSON``,
``DateTime(timezone=True)``, ``Text``). Constraint and index names come from the naming
convention on ``Base.metadata``; alembic migrations rely on those names being stable.

- ``journal_events``: every journalled mutation, keyed by ``event_id`` (the idempotency key).
  Breaker transitions and handovers are rows here with their kind; they have no table of
  their own.
- ``reservations``: one row per reservation, kept current from the journal in the same
  transaction as the events' insert, so dashboards read it instead of replaying the journal.
- ``pool_limits``, ``route_weights``, ``breaker_settings``: operator-set values that override
  the config file's seeds (DESIGN §2a).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        str: Text,
    }


class JournalEventRow(Base):
    """One ``JournalEvent``; ``pool_ids`` is comma-joined as in the Redis stream entry."""

    __tablename__ = "journal_events"

    event_id: Mapped[str] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    reservation_id: Mapped[str | None] = mapped_column(index=True)
    pool_ids: Mapped[str]
    data: Mapped[dict[str, Any]]

    # Admin "recent events of kind X" and dashboards' time windows both scan by kind and time.
    __table_args__ = (Index("ix_journal_events_kind_at", "kind", "at"),)


class ReservationRow(Base):
    """Current state of one reservation, folded from its journal events."""

    __tablename__ = "reservations"

    id: Mapped[str] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    request_id: Mapped[str | None]
    candidate_id: Mapped[str | None]
    pool_ids: Mapped[str]
    # SQL NULL (not JSON null) until an event tells, so the upsert can COALESCE.
    reserved: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    outcome: Mapped[str | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(index=True)


class PoolLimitsRow(Base):
    """Operator-set limits of one quota pool (``dispatchctl limits set``)."""

    __tablename__ = "pool_limits"

    pool_id: Mapped[str] = mapped_column(primary_key=True)
    limits: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str]


class RouteWeightRow(Base):
    """Operator-set weight of one backend of a route (``dispatchctl weights set``)."""

    __tablename__ = "route_weights"

    route: Mapped[str] = mapped_column(primary_key=True)
    backend: Mapped[str] = mapped_column(primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime]


class BreakerSettingsRow(Base):
    """Operator-set circuit-breaker thresholds of one agent."""

    __tablename__ = "breaker_settings"

    agent: Mapped[str] = mapped_column(primary_key=True)
    settings: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
