"""In-process fan-out of directives to the agent streams connected to this replica.

An operator's drain lands on whichever replica served the Admin call, while the cluster's
stream may be held by another one. So the hub is only the fast path: the registry keeps the
drain flag, and every stream compares it with what it last told its agent on each heartbeat
(``ReportOutcome.drained``), which reaches streams on every replica within one interval.

    hub = DirectiveHub()
    stream = hub.open(deliver)      # deliver(directive), or deliver(None): end the stream
    stream.bind("c1")               # once the first report names the cluster
    hub.publish("c1", Drain(True, "kernel upgrade"))
    stream.close()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop taking new work (``drain``) or take it again; ``reason`` goes to the agent's log."""

    drain: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """New report interval (None: unchanged) or weight override (0: clear, None: unchanged)."""

    report_interval: float | None = None
    weight_percent: int | None = None


Directive = Drain | ConfigChange
#: Called on the event loop; None asks the stream to end (server shutdown).
Deliver = Callable[[Directive | None], None]


class HubStream:
    """One connected agent stream's registration with the hub."""

    def __init__(self, hub: DirectiveHub, deliver: Deliver) -> None:
        self._hub = hub
        self.deliver = deliver
        self.cluster_id: str | None = None

    def bind(self, cluster_id: str) -> None:
        self._hub._bind(self, cluster_id)

    def close(self) -> None:
        self._hub._close(self)


class DirectiveHub:
    """Which streams on this replica speak for which cluster; ``close()`` ends them all."""

    def __init__(self) -> None:
        self._streams: set[HubStream] = set()
        self._by_cluster: dict[str, set[HubStream]] = {}
        self.closed = False

    def open(self, deliver: Deliver) -> HubStream:
        stream = HubStream(self, deliver)
        self._streams.add(stream)
        if self.closed:
            deliver(None)
        return stream

    def publish(self, cluster_id: str, directive: Directive) -> int:
        """Hand ``directive`` to every local stream of ``cluster_id``; how many there were."""
        streams = self._by_cluster.get(cluster_id, ())
        for stream in streams:
            stream.deliver(directive)
        return len(streams)

    def connected(self, cluster_id: str) -> bool:
        return bool(self._by_cluster.get(cluster_id))

    def close(self) -> None:
        """End every stream (server shutdown), so agents reconnect to another replica."""
        self.closed = True
        for stream in list(self._streams):
            stream.deliver(None)

    def _bind(self, stream: HubStream, cluster_id: str) -> None:
        if stream.cluster_id is not None:
            self._by_cluster.get(stream.cluster_id, set()).discard(stream)
        stream.cluster_id = cluster_id
        self._by_cluster.setdefault(cluster_id, set()).add(stream)

    def _close(self, stream: HubStream) -> None:
        self._streams.discard(stream)
        if stream.cluster_id is not None:
            peers = self._by_cluster.get(stream.cluster_id)
            if peers is not None:
                peers.discard(stream)
                if not peers:
                    del self._by_cluster[stream.cluster_id]
