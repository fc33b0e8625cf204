"""Every error the dispatcher raises on purpose.

The tree (``rpc/status.py`` maps each leaf to one gRPC status code)::

    DispatcherError                    base; never raised itself
    ├── ConfigError                    bad config file / env / flag: file, field, reason
    ├── InvalidArgument                a request field is wrong: field, reason
    ├── NotFound                       unknown route, pool, cluster, reservation, task
    ├── AlreadyExists                  creating something whose id is taken
    ├── FailedPrecondition             valid request, wrong state (e.g. settle of a released lease)
    ├── QuotaExhausted                 no candidate has room: retry_after, per-candidate reasons
    ├── Unauthenticated                no or unknown credential
    ├── PermissionDenied               credential known but not allowed (other cluster's id)
    └── BackendUnavailable             Redis / SQL unreachable or past its deadline

Backends translate their library's exceptions into these at their boundary
(``raise BackendUnavailable(...) from exc``); nothing above a backend sees redis or
SQLAlchemy exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping


class DispatcherError(Exception):
    """Base of every deliberate dispatcher error."""


class ConfigError(DispatcherError):
    """Configuration that cannot be used; printed as one line at start-up."""

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: {field}: {reason}")


class InvalidArgument(DispatcherError):
    """A request field is missing, malformed or out of range."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class NotFound(DispatcherError):
    """The thing a request names does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"unknown {kind}: {key!r}")


class AlreadyExists(DispatcherError):
    """An id that must be new is taken."""


class FailedPrecondition(DispatcherError):
    """The request is well formed but the target is in the wrong state."""


class QuotaExhausted(DispatcherError):
    """No candidate can take the request now; the caller should retry after ``retry_after`` s."""

    def __init__(self, retry_after: float, reasons: Mapping[str, str] | None = None) -> None:
        self.retry_after = max(0.0, retry_after)
        self.reasons = dict(reasons or {})
        detail = ", ".join(f"{k}: {v}" for k, v in self.reasons.items())
        super().__init__(
            f"no capacity; retry after {self.retry_after:.3f}s" + (f" ({detail})" if detail else "")
        )


class Unauthenticated(DispatcherError):
    """The caller presented no credential, or one the dispatcher does not know."""


class PermissionDenied(DispatcherError):
    """The credential is known but does not allow this action."""


class BackendUnavailable(DispatcherError):
    """A hot store or durable ledger call failed or ran past its deadline."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} unavailable: {reason}")
