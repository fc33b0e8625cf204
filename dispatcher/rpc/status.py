"""The one table from dispatcher errors to gRPC status codes, and how to abort with them.

A ``QuotaExhausted`` carries ``google.rpc.RetryInfo`` in the status details so clients (and
the SDK) know when to come back; every other error carries its message only.
"""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dispatcher import errors

STATUS_BY_ERROR: dict[type[errors.DispatcherError], grpc.StatusCode] = {
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.QuotaExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(error: errors.DispatcherError) -> grpc.StatusCode:
    """The status code for ``error``: its own class or the nearest listed base class."""
    for cls in type(error).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(error: errors.DispatcherError) -> grpc.Status:
    """A status with details, as `grpc_status` sends them in ``grpc-status-details-bin``."""
    code = status_code_for(error)
    status = status_pb2.Status(code=code.value[0], message=str(error))
    if isinstance(error, errors.QuotaExhausted):
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.CopyFrom(duration_from_seconds(error.retry_after))
        status.details.add().Pack(retry)
    if isinstance(error, errors.InvalidArgument):
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=error.field, description=error.reason)
        status.details.add().Pack(bad)
    rich: grpc.Status = rpc_status.to_status(status)
    return rich


def duration_from_seconds(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
