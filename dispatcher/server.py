"""The dispatcher's gRPC server and its lifecycle.

Start: open the runtime (backends within ``hot_store.connect_timeout``, schema, ledger,
registry, background loops), register the four dispatcher.v1 services, gRPC health and
server reflection, bind, mark SERVING.
Stop (SIGTERM / SIGINT): mark every service NOT_SERVING so load balancers stop sending new
calls, end heartbeat streams (agents reconnect to another replica), let in-flight calls finish
within ``server.grace_period``, then close the runtime.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dispatcher.config import DispatcherConfig
from dispatcher.event_loop import loop_name
from dispatcher.heap import prepare_heap_for_serving
from dispatcher.logs import get_logger
from dispatcher.relay.gateway import ResultGateway
from dispatcher.relay.gateway_process import gateway_for
from dispatcher.rpc.admin_service import AdminServicer
from dispatcher.rpc.agent_service import AgentServicer
from dispatcher.rpc.auth import OperatorAuth, Role
from dispatcher.rpc.result_service import ResultServicer
from dispatcher.rpc.routing_service import RoutingServicer
from dispatcher.rpc.tls import server_credentials
from dispatcher.runtime import Runtime
from dispatcher.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    result_pb2,
    result_pb2_grpc,
    routing_pb2,
    routing_pb2_grpc,
)

log = get_logger(__name__)

SERVICE_NAMES: tuple[str, ...] = (
    routing_pb2.DESCRIPTOR.services_by_name["RoutingService"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    result_pb2.DESCRIPTOR.services_by_name["ResultService"].full_name,
)

# Heartbeat streams and result streams are long-lived: keep them alive through idle NATs and
# proxies, and let clients ping us at the same pace.
GRPC_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # gRPC sets SO_REUSEPORT by default: a second replica started on a taken port would
    # share it silently, splitting callers between two unrelated in-memory dispatchers.
    ("grpc.so_reuseport", 0),
)


def agent_tokens(config: DispatcherConfig) -> dict[str, str]:
    """Cluster id -> token; empty means agents are not authenticated (embedded default)."""
    return {cid: token.get_secret_value() for cid, token in config.auth.agent_tokens.items()}


def operator_tokens(config: DispatcherConfig) -> dict[str, tuple[str, Role]]:
    """Operator name -> (token, role); empty means the Admin API is open (loopback default)."""
    return {
        name: (entry.token.get_secret_value(), entry.role)
        for name, entry in config.auth.operator_tokens.items()
    }


class DispatcherServer:
    """One dispatcher replica. ``start()`` then ``stop()``, or ``serve()`` until a signal."""

    def __init__(self, config: DispatcherConfig) -> None:
        self.config = config
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._runtime: Runtime | None = None
        self._agents: AgentServicer | None = None
        self.gateway: ResultGateway | None = None

    @property
    def runtime(self) -> Runtime:
        """What the running server holds (for embedding and tests)."""
        if self._runtime is None:
            raise RuntimeError("the server is not running")
        return self._runtime

    @property
    def address(self) -> str:
        host = self.config.server.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        self._runtime = runtime = await Runtime.open(self.config)
        metrics_listen = self.config.server.metrics_listen
        if metrics_listen:
            try:
                self.metrics_port = runtime.metrics.serve(metrics_listen)
            except OSError as exc:
                await runtime.aclose()
                self._runtime = None
                raise OSError(f"cannot serve metrics on {metrics_listen}: {exc}") from exc
        server = grpc.aio.server(options=GRPC_OPTIONS)
        self._register(server, runtime)
        tls = self.config.tls
        try:
            if tls.enabled:
                self.port = server.add_secure_port(
                    self.config.server.listen, server_credentials(tls)
                )
            else:
                self.port = server.add_insecure_port(self.config.server.listen)
        except RuntimeError as exc:
            await runtime.aclose()
            self._runtime = None
            raise OSError(f"cannot listen on {self.config.server.listen}: {exc}") from exc
        await server.start()
        self._server = server
        if self.config.relay.gateway_with_server:
            gateway = gateway_for(self.config, runtime.results)
            try:
                await gateway.start()
            except OSError as exc:  # e.g. its port is taken: stop what already runs
                await self.stop(grace=0)
                listen = self.config.relay.gateway_listen
                raise OSError(f"cannot serve the gateway on {listen}: {exc}") from exc
            self.gateway = gateway
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            address=self.address,
            hot_store=self._hot_store_label(),
            metrics_port=self.metrics_port,
            event_loop=loop_name(),
        )

    def _register(self, server: grpc.aio.Server, runtime: Runtime) -> None:
        routing_pb2_grpc.add_RoutingServiceServicer_to_server(
            RoutingServicer(runtime.ledger, runtime.router), server
        )
        self._agents = AgentServicer(
            runtime.registry,
            tokens=agent_tokens(self.config) or None,
            client_certificates=self.config.tls.client_ca_file is not None,
            report_interval=self.config.routing.heartbeat_interval,
            hub=runtime.hub,
            on_usage=runtime.apply_usage,
            on_observations=runtime.apply_observations,
        )
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self._agents, server)
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(
                runtime,
                OperatorAuth(operator_tokens(self.config), self.config.auth.operator_certificates),
            ),
            server,
        )
        result_pb2_grpc.add_ResultServiceServicer_to_server(
            ResultServicer(
                runtime.results,
                keepalive_interval=self.config.relay.keepalive_interval,
            ),
            server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    def _hot_store_label(self) -> str:
        return "redis" if self._runtime and self._runtime.backends.redis else "memory"

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop; safe to call more than once."""
        grace = self.config.server.grace_period if grace is None else grace
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            if self._agents is not None:
                self._agents.close_streams()
            if self._runtime is not None:
                self._runtime.router.watch.close()
            await self._server.stop(grace)
            self._server = None
            log.info("stopped", grace_s=grace)
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully."""
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        await self.start()
        prepare_heap_for_serving()  # the process's own entry point only: not in-process servers
        try:
            await stop_requested.wait()
            log.info("shutdown_requested")
        finally:
            await self.stop()
