"""``infra/compose.yaml`` starts what the code can run: real commands, configs that load,
ports that are listened on, and a start order that waits for the schema."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.infra import compose as c
from tests.infra.commands import env_names_read_by_code, is_project_variable, parse_command
from tests.infra.files import GRAFANA_DIR, REPO, image, port_of

WILDCARD_HOSTS = {"0.0.0.0", "::"}
POSTGRES_DEFAULT_PORT = 5432  # what the postgres image listens on; the URL may leave it out
REDIS_DEFAULT_PORT = 6379


def only(names: list[str], what: str) -> str:
    assert len(names) == 1, f"expected one {what} service, found {names}"
    return names[0]


def test_project_services_build_the_dockerfile_from_the_repository_root() -> None:
    built = [s for s in c.services().values() if c.builds_project_image(s)]
    assert built, "no service builds infra/Dockerfile"
    for service in built:
        assert (c.INFRA / service["build"]["context"]).resolve() == REPO
    assert c.project_image_names(), "give the built image a tag the other services can name"


@pytest.mark.parametrize("name", [n for n, s in c.services().items() if c.runs_project_image(s)])
def test_project_service_runs_a_real_console_script_and_subcommand(name: str) -> None:
    run = c.invocation(name)
    assert run.subcommands, f"{name}: {list(run.argv)} names no subcommand"


@pytest.mark.parametrize(
    "name",
    [n for n, s in c.services().items() if c.runs_project_image(s) and c.healthcheck_command(s)],
)
def test_healthcheck_in_the_project_image_is_a_real_command(name: str) -> None:
    service = c.services()[name]
    parse_command(c.healthcheck_command(service) or [], c.environment(service))


def test_project_environment_variables_are_ones_the_code_reads() -> None:
    known = env_names_read_by_code()
    for name, service in c.services().items():
        unknown = {k for k in c.environment(service, with_image=False) if is_project_variable(k)}
        assert unknown <= known, f"{name} sets variables no code reads: {sorted(unknown - known)}"


def test_bind_mounts_exist() -> None:
    for name, service in c.services().items():
        for mount in c.mounts(service):
            if not mount.is_bind or GRAFANA_DIR in (mount.host_path, *mount.host_path.parents):
                continue  # infra/grafana is checked, or skipped, by test_grafana_wiring.py
            assert mount.host_path.exists(), f"{name} mounts missing {mount.source}"


def test_named_volumes_are_declared() -> None:
    declared = set(c.compose().get("volumes") or {})
    for name, service in c.services().items():
        for mount in c.mounts(service):
            if not mount.is_bind:
                assert mount.source in declared, f"{name}: volume {mount.source} not declared"


@pytest.mark.parametrize("name", c.dispatcher_services())
def test_dispatcher_config_loads_through_the_real_loader(name: str) -> None:
    c.config_of(name)  # raises ConfigError naming the file, field and reason


def test_two_replicas_share_stores_and_token_secret() -> None:
    replicas = c.dispatcher_services("serve")
    assert len(replicas) >= 2, f"expected at least two dispatcher replicas, got {replicas}"
    configs = [c.config_of(name) for name in replicas]
    secrets = {cfg.relay.token_secret for cfg in configs}
    assert None not in secrets, "replicas need relay.token_secret (else tokens depend on Redis)"
    secrets = {secret.get_secret_value() for secret in secrets if secret}
    assert len(secrets) == 1, "replicas disagree on relay.token_secret"
    assert len({cfg.hot_store.url for cfg in configs}) == 1
    assert len({cfg.durable.database_url for cfg in configs}) == 1
    assert urlsplit(configs[0].hot_store.url).scheme in ("redis", "rediss")
    for cfg in configs:
        # Each replica admits 1/replicas of the static share while Redis is down.
        assert cfg.hot_store.replicas >= len(replicas), "hot_store.replicas < replica count"


def test_redis_url_names_the_redis_service() -> None:
    for name in c.dispatcher_services("serve") + c.dispatcher_services("gateway"):
        url = urlsplit(c.config_of(name).hot_store.url)
        service = c.services().get(url.hostname or "")
        assert service is not None, f"{name}: hot store host {url.hostname} is no service"
        assert str(service.get("image", "")).startswith("redis")
        assert (url.port or REDIS_DEFAULT_PORT) == REDIS_DEFAULT_PORT


def test_database_url_matches_the_postgres_service() -> None:
    users = c.dispatcher_services("serve") + c.dispatcher_services("migrate")
    urls = {c.config_of(name).durable.database_url for name in users}
    assert len(urls) == 1, f"migrate and the replicas use different databases: {len(urls)}"
    url = urlsplit(urls.pop())
    assert url.scheme == "postgresql+asyncpg"
    service = c.services().get(url.hostname or "")
    assert service is not None, f"database host {url.hostname} is no service"
    env = c.environment(service)
    assert (url.port or POSTGRES_DEFAULT_PORT) == POSTGRES_DEFAULT_PORT
    assert url.username == env["POSTGRES_USER"]
    assert url.password == env["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == env.get("POSTGRES_DB", env["POSTGRES_USER"])


def test_replicas_start_only_after_migrate_completes() -> None:
    migrate = only(c.dispatcher_services("migrate"), "`dispatcher migrate`")
    assert c.services()[migrate].get("restart", "no") == "no", "migrate must run once"
    for name in c.dispatcher_services("serve"):
        condition = c.depends_on(c.services()[name]).get(migrate)
        assert condition == "service_completed_successfully", f"{name} does not wait for it"


def test_dependency_conditions_can_be_met() -> None:
    for name, service in c.services().items():
        for dependency, condition in c.depends_on(service).items():
            target = c.services().get(dependency)
            assert target is not None, f"{name} depends on missing service {dependency}"
            if condition == "service_healthy":
                assert c.healthcheck_command(target), f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                # A restarting service never "completes": dependants would wait forever.
                assert target.get("restart", "no") == "no", f"{dependency} restarts"


def test_stores_are_waited_for_until_healthy() -> None:
    for name in c.dispatcher_services("serve") + c.dispatcher_services("migrate"):
        conditions = c.depends_on(c.services()[name])
        database = urlsplit(c.config_of(name).durable.database_url).hostname
        assert conditions.get(database or "") == "service_healthy", f"{name} and {database}"
    for name in c.dispatcher_services("serve"):
        redis = urlsplit(c.config_of(name).hot_store.url).hostname
        assert c.depends_on(c.services()[name]).get(redis or "") == "service_healthy"


@pytest.mark.parametrize("name", c.dispatcher_services("serve"))
def test_replica_listens_where_other_containers_reach_it(name: str) -> None:
    server = c.config_of(name).server
    assert server.listen.rpartition(":")[0] in WILDCARD_HOSTS, server.listen
    assert server.metrics_listen, f"{name}: no server.metrics_listen, nothing to scrape"
    assert server.metrics_listen.rpartition(":")[0] in WILDCARD_HOSTS


def listened_ports(name: str) -> set[int]:
    config = c.config_of(name)
    run = c.invocation(name)
    if run.subcommands == ("gateway",):
        return {port_of(config.relay.gateway_listen)}
    ports = {port_of(config.server.listen)}
    if config.server.metrics_listen:
        ports.add(port_of(config.server.metrics_listen))
    if config.relay.gateway_with_server:
        ports.add(port_of(config.relay.gateway_listen))
    return ports


@pytest.mark.parametrize("name", c.dispatcher_services("serve") + c.dispatcher_services("gateway"))
def test_published_ports_are_listened_on_and_exposed(name: str) -> None:
    listened = listened_ports(name)
    published = set(c.published_ports(c.services()[name]))
    assert published <= listened, f"{name} publishes {published}, listens on {listened}"
    assert listened <= image().exposed, f"EXPOSE {image().exposed} misses {listened}"


def test_gateway_listens_on_all_interfaces() -> None:
    for name in c.dispatcher_services("gateway"):
        listen = c.config_of(name).relay.gateway_listen
        assert listen.rpartition(":")[0] in WILDCARD_HOSTS, listen


@pytest.mark.parametrize("name", c.dispatcher_services("serve"))
def test_replica_healthcheck_asks_its_own_grpc_port(name: str) -> None:
    service = c.services()[name]
    argv = c.healthcheck_command(service)
    assert argv, f"{name} has no healthcheck (agents wait for service_healthy)"
    run = parse_command(argv, c.environment(service))
    target = getattr(run.args, "server", None) or getattr(run.args, "dispatcher", None)
    assert target, f"{argv} names no dispatcher address"
    assert port_of(target) == port_of(c.config_of(name).server.listen)
