"""The result relay's vocabulary: events, event ids, task tokens, settings and the store protocol.

Event ids look like Redis stream ids (``<ms>-<n>``) on every backend, so validation is shared
and a caller can resume on either; callers treat them as opaque and only compare them by
handing them back. ``published_at`` is the id's millisecond part: one clock, the store's.

Tokens are random 256-bit strings; stores keep only their SHA-256. A fast hash is enough
because the token is high-entropy (no dictionary to attack), unlike a password.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dispatcher.errors import DispatcherError, InvalidArgument

AFTER_FIELD = "after_event_id"
MAX_ID_PART = 2**63  # beyond any id a store issues; Redis rejects larger stream ids
_EVENT_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_TASK_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces (it goes into keys)


class EventKind(enum.Enum):
    PROGRESS = "progress"
    FINAL = "final"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        """FINAL and ERROR end the stream: nothing may be published after them."""
        return self is not EventKind.PROGRESS


@dataclass(frozen=True, slots=True)
class ResultEvent:
    event_id: str
    kind: EventKind
    payload: bytes
    content_type: str
    published_at: float  # epoch seconds

    @property
    def terminal(self) -> bool:
        return self.kind.terminal


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: the event's id, and whether that sequence was already stored."""

    event_id: str
    duplicate: bool


@dataclass(frozen=True)
class RelaySettings:
    """Limits of the relay. ``ttl`` counts from a task's last publish (or its registration)."""

    ttl: float = 24 * 3600.0
    max_bytes_per_task: int = 8 * 1024 * 1024
    page_size: int = 64  # events one read returns: the bound on what a stream holds in memory


class ResultTooLarge(DispatcherError):
    """A publish would take a task's stored payload past the cap.

    RESOURCE_EXHAUSTED on the wire, without RetryInfo: waiting does not make room, so this is
    not a ``QuotaExhausted`` (whose RetryInfo would tell the SDK to come back).
    """

    def __init__(self, task_id: str, limit: int) -> None:
        self.task_id = task_id
        self.limit = limit
        super().__init__(f"task {task_id}: result exceeds {limit} bytes")


def check_task_id(task_id: str) -> None:
    if not _TASK_ID.match(task_id):
        raise InvalidArgument("task_id", "must be 1..128 printable ASCII characters")


def parse_event_id(event_id: str, field: str = AFTER_FIELD) -> tuple[int, int]:
    """``(ms, n)`` of a well-formed id; InvalidArgument naming ``field`` otherwise."""
    match = _EVENT_ID.match(event_id)
    if match is None:
        raise InvalidArgument(field, f"malformed event id {event_id[:40]!r}")
    ms, n = int(match[1]), int(match[2])
    if ms >= MAX_ID_PART or n >= MAX_ID_PART:
        raise InvalidArgument(field, f"malformed event id {event_id[:40]!r}")
    return ms, n


def format_event_id(ms: int, n: int) -> str:
    return f"{ms}-{n}"


def check_after(after: str, last: str | None) -> None:
    """Refuse a resume point past the stream's end: the caller holds an id we never issued."""
    if not after:
        return
    position = parse_event_id(after)
    if last is None or position > parse_event_id(last, "last"):
        raise InvalidArgument(AFTER_FIELD, f"{after!r} is after the task's last event")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(token), digest)


class ResultStore(Protocol):
    """Per-task event streams. Both backends pass ``tests/relay/test_store_contract.py``.

    Errors: NotFound (unknown or expired task), PermissionDenied (wrong token),
    InvalidArgument (malformed or future ``after``, bad field), FailedPrecondition (publish
    after FINAL/ERROR), ResultTooLarge (byte cap), BackendUnavailable.
    """

    settings: RelaySettings

    async def register(self, task_id: str, token: str | None = None) -> str:
        """Create the task's stream and return its token (a new one unless ``token`` given).

        Idempotent for the same token, so a retried Route may register again with the token
        it handed out first; another token for a live task is ``AlreadyExists``.
        """
        ...

    async def publish(
        self, task_id: str, kind: EventKind, payload: bytes, content_type: str, sequence: int
    ) -> Published:
        """Append one event, unless ``sequence`` was already stored (then ``duplicate``)."""
        ...

    async def read(
        self, task_id: str, token: str, after: str = "", limit: int | None = None
    ) -> Sequence[ResultEvent]:
        """Up to ``limit`` (default ``settings.page_size``) events after ``after``, in order."""
        ...

    async def wait(self, task_id: str, after: str, timeout: float) -> bool:
        """True once the stream may hold an event after ``after`` (at once if it already
        does), False after ``timeout`` seconds. Spurious True is allowed: callers re-read."""
        ...

    async def aclose(self) -> None: ...
