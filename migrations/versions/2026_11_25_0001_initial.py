"""initial: journal, reservation projection, operator settings

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "journal_events",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("reservation_id", sa.Text(), nullable=True),
        sa.Column("pool_ids", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_journal_events")),
    )
    op.create_index("ix_journal_events_kind_at", "journal_events", ["kind", "at"])
    op.create_index(op.f("ix_journal_events_reservation_id"), "journal_events", ["reservation_id"])
    op.create_table(
        "reservations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("candidate_id", sa.Text(), nullable=True),
        sa.Column("pool_ids", sa.Text(), nullable=False),
        sa.Column("reserved", sa.JSON(), nullable=True),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reservations")),
    )
    op.create_index(op.f("ix_reservations_state"), "reservations", ["state"])
    op.create_index(op.f("ix_reservations_updated_at"), "reservations", ["updated_at"])
    op.create_table(
        "pool_limits",
        sa.Column("pool_id", sa.Text(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pool_id", name=op.f("pk_pool_limits")),
    )
    op.create_table(
        "route_weights",
        sa.Column("route", sa.Text(), nullable=False),
        sa.Column("backend", sa.Text(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("route", "backend", name=op.f("pk_route_weights")),
    )
    op.create_table(
        "breaker_settings",
        sa.Column("agent", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("agent", name=op.f("pk_breaker_settings")),
    )


def downgrade() -> None:
    op.drop_table("breaker_settings")
    op.drop_table("route_weights")
    op.drop_table("pool_limits")
    op.drop_index(op.f("ix_reservations_updated_at"), table_name="reservations")
    op.drop_index(op.f("ix_reservations_state"), table_name="reservations")
    op.drop_table("reservations")
    op.drop_index(op.f("ix_journal_events_reservation_id"), table_name="journal_events")
    op.drop_index("ix_journal_events_kind_at", table_name="journal_events")
    op.drop_table("journal_events")
