"""dashboard views over the journal, and the read-only role dashboards connect as

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Dashboards read these views, never the tables (DESIGN §2a, §9). Every view reads
``journal_events`` only, so it shows exactly what the journal consumer copied; event
``data`` keys are the ones ``dispatcher.ledger.journal`` documents (the memory ledger and
the Lua scripts write the same keys). Times are the hot store's clock, in UTC. PostgreSQL
returns ``timestamptz``; SQLite returns UTC text as SQLAlchemy stores it
(``'YYYY-MM-DD HH:MM:SS.ffffff'``; minutes ``'YYYY-MM-DD HH:MM:00'``; open_until to the ms).
A candidate id is ``cluster|backend|agent_version|lane``
(``dispatcher.router.encode_choice``); an id without separators (a reservation made by a
tool) gives its whole text as the cluster and ``''`` for the other three parts.

``v_route_choices`` — one row per ``reserved`` event: the routing choice, split.
    at, reservation_id, request_id, candidate_id, candidate_index (0 = the engine's first
    choice), cluster_id, backend, agent_version, lane, spilled_from (candidate id skipped
    because its quota was full, else NULL), spilled_from_cluster, pool_ids (comma-joined).

``v_decisions_per_cluster`` — routed decisions per minute and choice.
    minute, cluster_id, backend, agent_version, lane, decisions, spilled (how many of those
    decisions landed here because an earlier candidate's quota was full).
    MAINTENANCE answers reserve nothing and are not journalled, so they do not appear.

``v_spillovers`` — one row per spilled reservation.
    at, reservation_id, request_id, from_cluster, to_cluster, from_candidate_id,
    to_candidate_id, pool_ids (the pools the reservation drew on instead, comma-joined).

``v_usage_per_pool_minute`` — quota per pool and minute.
    minute, pool_id,
    reservations, reserved_requests, reserved_tokens: ``reserved`` events in that minute and
    the estimated cost they held on the pool (``cost[pool]``, tokens after output weight);
    settled_reservations: ``settled`` events in that minute;
    used_requests, used_input_tokens, used_output_tokens, used_tokens (input + output, as
    the provider billed them) and charged_tokens (what the pool was finally debited:
    ``charged[pool].tokens``, after output weight and refund policy): each reservation's
    final usage, i.e. its settle's usage where it was settled, else the running total of
    its latest interim ``usage`` report (a task still in flight, or abandoned after it
    ran). That usage counts in the minute of the event it came from, so an in-flight task's
    usage moves to the minute of its next report and finally to its settle's minute.

``v_breaker_events`` — one row per circuit-breaker transition.
    at, event_id, agent_version, from_state, to_state (closed | open | half_open),
    failure_rate, slow_rate (0..1 over the breaker's window), open_until (NULL unless the
    transition opened it).

``v_handovers`` — one row per sticky-session handover.
    at, event_id, session_key, from_cluster, to_cluster.

PostgreSQL only: the NOLOGIN role ``dispatcher_readonly`` (created if missing; roles are
cluster-wide) gets CONNECT on this database, USAGE on the schema and SELECT on these views,
nothing on the tables. Views run with their owner's rights, so SELECT on a view is enough.
Operators log in as a member, e.g. ``CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE
dispatcher_readonly``. Downgrade revokes the grants but keeps the role: other databases
of the cluster may use it. A later revision that adds a view must grant SELECT on it.
"""

from collections.abc import Callable, Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READONLY_ROLE = "dispatcher_readonly"
# Dependency order: v_route_choices first, since two views read it.
VIEWS = (
    "v_route_choices",
    "v_decisions_per_cluster",
    "v_spillovers",
    "v_usage_per_pool_minute",
    "v_breaker_events",
    "v_handovers",
)
SEP = "|"  # dispatcher.router.CHOICE_SEP


class _Postgres:
    """JSON access on ``json`` columns (``sa.JSON`` is ``json``, not ``jsonb``, here)."""

    @staticmethod
    def text(doc: str, *path: str) -> str:
        """The JSON value at ``path`` as text (NULL if missing or JSON null)."""
        *head, last = path
        return "".join([doc, *(f"->'{p}'" for p in head), f"->>'{last}'"])

    def num(self, doc: str, *path: str) -> str:
        return f"COALESCE(({self.text(doc, *path)})::numeric, 0)"

    def real(self, doc: str, *path: str) -> str:
        return f"({self.text(doc, *path)})::double precision"

    @staticmethod
    def each(doc: str, key: str, alias: str) -> str:
        """A FROM item with one row (``alias.key``, ``alias.value``) per member of an object.

        A value that is not an object yields no rows instead of failing the whole view.
        """
        value = f"{doc}->'{key}'"
        return (
            f"CROSS JOIN LATERAL json_each("
            f"CASE WHEN json_typeof({value}) = 'object' THEN {value} END) AS {alias}"
        )

    @staticmethod
    def minute(column: str) -> str:
        return f"date_trunc('minute', {column})"

    @staticmethod
    def parts(text: str, n: int) -> list[str]:
        return [f"split_part({text}, '{SEP}', {i})" for i in range(1, n + 1)]

    @staticmethod
    def from_unix(seconds: str) -> str:
        return f"to_timestamp({seconds})"


class _Sqlite:
    """JSON1 functions on the JSON text SQLAlchemy stores."""

    @staticmethod
    def text(doc: str, *path: str) -> str:
        return f"json_extract({doc}, '$.{'.'.join(path)}')"

    def num(self, doc: str, *path: str) -> str:
        return f"COALESCE({self.text(doc, *path)}, 0)"

    def real(self, doc: str, *path: str) -> str:
        return f"CAST({self.text(doc, *path)} AS REAL)"

    @staticmethod
    def each(doc: str, key: str, alias: str) -> str:
        # json_each of a scalar yields one keyless row; the caller's WHERE needs
        # ``json_type(doc, '$.key') = 'object'`` (see _each_guard).
        return f"CROSS JOIN json_each({doc}, '$.{key}') AS {alias}"

    @staticmethod
    def minute(column: str) -> str:
        return f"strftime('%Y-%m-%d %H:%M:00', {column})"

    @staticmethod
    def parts(text: str, n: int) -> list[str]:
        """``split_part`` for parts 1..n: padded with n separators so every part exists."""
        rest = f"({text} || '{SEP * n}')"
        out = []
        for _ in range(n):
            cut = f"instr({rest}, '{SEP}')"
            out.append(f"substr({rest}, 1, {cut} - 1)")
            rest = f"substr({rest}, {cut} + 1)"
        return out

    @staticmethod
    def from_unix(seconds: str) -> str:
        return f"strftime('%Y-%m-%d %H:%M:%f', {seconds}, 'unixepoch')"


_Dialect = _Postgres | _Sqlite


def _each_guard(d: _Dialect, doc: str, key: str) -> str:
    if isinstance(d, _Sqlite):
        return f" AND json_type({doc}, '$.{key}') = 'object'"
    return ""


def _route_choices(d: _Dialect) -> str:
    cluster, backend, version, lane = d.parts("r.candidate_id", 4)
    (spilled_cluster,) = d.parts("r.spilled_from", 1)
    return f"""
SELECT
    r.at AS at,
    r.reservation_id AS reservation_id,
    r.request_id AS request_id,
    r.candidate_id AS candidate_id,
    r.candidate_index AS candidate_index,
    {cluster} AS cluster_id,
    {backend} AS backend,
    {version} AS agent_version,
    {lane} AS lane,
    r.spilled_from AS spilled_from,
    {spilled_cluster} AS spilled_from_cluster,
    r.pool_ids AS pool_ids
FROM (
    SELECT
        e.at AS at,
        e.reservation_id AS reservation_id,
        {d.text("e.data", "request_id")} AS request_id,
        {d.text("e.data", "candidate_id")} AS candidate_id,
        CAST({d.text("e.data", "candidate_index")} AS INTEGER) AS candidate_index,
        NULLIF({d.text("e.data", "spilled_from")}, '') AS spilled_from,
        e.pool_ids AS pool_ids
    FROM journal_events e
    WHERE e.kind = 'reserved'
) AS r"""


def _decisions_per_cluster(d: _Dialect) -> str:
    minute = d.minute("c.at")
    return f"""
SELECT
    {minute} AS minute,
    c.cluster_id AS cluster_id,
    c.backend AS backend,
    c.agent_version AS agent_version,
    c.lane AS lane,
    COUNT(*) AS decisions,
    SUM(CASE WHEN c.spilled_from IS NOT NULL THEN 1 ELSE 0 END) AS spilled
FROM v_route_choices c
GROUP BY {minute}, c.cluster_id, c.backend, c.agent_version, c.lane"""


def _spillovers(_d: _Dialect) -> str:
    return """
SELECT
    c.at AS at,
    c.reservation_id AS reservation_id,
    c.request_id AS request_id,
    c.spilled_from_cluster AS from_cluster,
    c.cluster_id AS to_cluster,
    c.spilled_from AS from_candidate_id,
    c.candidate_id AS to_candidate_id,
    c.pool_ids AS pool_ids
FROM v_route_choices c
WHERE c.spilled_from IS NOT NULL"""


def _usage_per_pool_minute(d: _Dialect) -> str:
    # A reservation's final usage: its settle, else its latest interim report (ties on
    # ``at`` broken by event id so exactly one report wins).
    final_usage = """(
        f.kind = 'settled'
        OR (
            f.kind = 'usage'
            AND NOT EXISTS (
                SELECT 1 FROM journal_events s
                WHERE s.reservation_id = f.reservation_id AND s.kind = 'settled'
            )
            AND NOT EXISTS (
                SELECT 1 FROM journal_events u
                WHERE u.reservation_id = f.reservation_id AND u.kind = 'usage'
                  AND (u.at > f.at OR (u.at = f.at AND u.event_id > f.event_id))
            )
        )
    )"""
    return f"""
SELECT
    minute,
    pool_id,
    SUM(reservations) AS reservations,
    SUM(reserved_requests) AS reserved_requests,
    SUM(reserved_tokens) AS reserved_tokens,
    SUM(settled_reservations) AS settled_reservations,
    SUM(used_requests) AS used_requests,
    SUM(used_input_tokens) AS used_input_tokens,
    SUM(used_output_tokens) AS used_output_tokens,
    SUM(used_input_tokens + used_output_tokens) AS used_tokens,
    SUM(charged_tokens) AS charged_tokens
FROM (
    SELECT
        {d.minute("r.at")} AS minute,
        c.key AS pool_id,
        1 AS reservations,
        {d.num("c.value", "requests")} AS reserved_requests,
        {d.num("c.value", "tokens")} AS reserved_tokens,
        0 AS settled_reservations,
        0 AS used_requests,
        0 AS used_input_tokens,
        0 AS used_output_tokens,
        0 AS charged_tokens
    FROM journal_events r
    {d.each("r.data", "cost", "c")}
    WHERE r.kind = 'reserved'{_each_guard(d, "r.data", "cost")}
    UNION ALL
    SELECT
        {d.minute("f.at")} AS minute,
        c.key AS pool_id,
        0 AS reservations,
        0 AS reserved_requests,
        0 AS reserved_tokens,
        CASE WHEN f.kind = 'settled' THEN 1 ELSE 0 END AS settled_reservations,
        {d.num("f.data", "usage", "requests")} AS used_requests,
        {d.num("f.data", "usage", "input_tokens")} AS used_input_tokens,
        {d.num("f.data", "usage", "output_tokens")} AS used_output_tokens,
        {d.num("c.value", "tokens")} AS charged_tokens
    FROM journal_events f
    {d.each("f.data", "charged", "c")}
    WHERE {final_usage}{_each_guard(d, "f.data", "charged")}
) AS per_event
GROUP BY minute, pool_id"""


def _breaker_events(d: _Dialect) -> str:
    return f"""
SELECT
    e.at AS at,
    e.event_id AS event_id,
    {d.text("e.data", "agent_version")} AS agent_version,
    {d.text("e.data", "from")} AS from_state,
    {d.text("e.data", "to")} AS to_state,
    {d.real("e.data", "failure_rate")} AS failure_rate,
    {d.real("e.data", "slow_rate")} AS slow_rate,
    {d.from_unix(d.real("e.data", "open_until"))} AS open_until
FROM journal_events e
WHERE e.kind = 'breaker'"""


def _handovers(d: _Dialect) -> str:
    return f"""
SELECT
    e.at AS at,
    e.event_id AS event_id,
    {d.text("e.data", "session")} AS session_key,
    {d.text("e.data", "from")} AS from_cluster,
    {d.text("e.data", "to")} AS to_cluster
FROM journal_events e
WHERE e.kind = 'handover'"""


BODIES: dict[str, Callable[[_Dialect], str]] = {
    "v_route_choices": _route_choices,
    "v_decisions_per_cluster": _decisions_per_cluster,
    "v_spillovers": _spillovers,
    "v_usage_per_pool_minute": _usage_per_pool_minute,
    "v_breaker_events": _breaker_events,
    "v_handovers": _handovers,
}


def _dialect() -> _Dialect:
    name = op.get_context().dialect.name
    if name == "postgresql":
        return _Postgres()
    if name == "sqlite":
        return _Sqlite()
    raise NotImplementedError(f"dashboard views for dialect {name!r}")


# Roles are cluster-wide and many databases may migrate at once (tests do): a concurrent
# CREATE ROLE surfaces as unique_violation, which is as good as "already there".
CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READONLY_ROLE}') THEN
        CREATE ROLE {READONLY_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$"""

GRANT_ACCESS = f"""
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {READONLY_ROLE}', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {READONLY_ROLE}', current_schema());
END
$$"""

REVOKE_ACCESS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{READONLY_ROLE}') THEN
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {READONLY_ROLE}', current_schema());
        EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {READONLY_ROLE}', current_database());
    END IF;
END
$$"""


def upgrade() -> None:
    dialect = _dialect()
    for name in VIEWS:
        op.execute(f"CREATE VIEW {name} AS{BODIES[name](dialect)}")
    if isinstance(dialect, _Postgres):
        op.execute(CREATE_ROLE)
        op.execute(GRANT_ACCESS)
        op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {READONLY_ROLE}")


def downgrade() -> None:
    dialect = _dialect()
    if isinstance(dialect, _Postgres):
        # Dropping a view drops its grants; the database and schema ones are revoked here.
        op.execute(REVOKE_ACCESS)
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
