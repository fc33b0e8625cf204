"""The caller SDK: route a task, follow its result, settle it.

    from dispatcher.client import DispatcherClient

    async with DispatcherClient("dispatcher:50051") as client:
        async with client.task("chat-default", "auditor") as run:
            await hand_to_cluster(run.decision)
            await run.mark_dispatched()
            async for event in run.results():
                print(event.kind, event.payload)

asyncio only. Callers of a dispatcher are servers (regional front ends) that hold hour-long
result streams for many users at once; that is an asyncio job, and a blocking twin would
double the API for no caller we have (STYLE: "twin sync/async APIs" are not worth copying).
A synchronous script can still use it through ``asyncio.run``.

What the SDK does for you:

- retries with jittered exponential backoff on UNAVAILABLE, and after exactly the server's
  ``google.rpc.RetryInfo`` delay on RESOURCE_EXHAUSTED (``retry.py``); every retried call is
  idempotent by contract (Route carries one ``request_id`` through all its attempts);
- ``await_result`` resumes after the last event id when the stream breaks (``results.py``);
- ``task()`` always ends the reservation: settle or release (``task.py``).

Errors reach you as ``grpc.aio.AioRpcError`` (``.code()``, ``.details()``).
"""

from dispatcher.client.client import DispatcherClient
from dispatcher.client.results import StreamEnded
from dispatcher.client.retry import RetryPolicy, retry_info_delay
from dispatcher.client.task import TaskRun

__all__ = ["DispatcherClient", "RetryPolicy", "StreamEnded", "TaskRun", "retry_info_delay"]
