"""Shared fixtures: a PostgreSQL cluster and a Kafka broker, each started once per session.

Both start lazily, only for tests that ask for them. Environment:
- BILLCYCLE_TEST_PG_URL: use this PostgreSQL server (a URL whose database may be created
  from) instead of starting one.
- BILLCYCLE_TEST_KAFKA: use this bootstrap server instead of starting a broker.
- BILLCYCLE_SKIP_KAFKA=1: skip the tests that need Kafka (by default they run, in CI too).
Tests using these fixtures get the `postgres` / `kafka` marker, so `-m "not kafka"` works.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from infra.postgres import LocalPostgres, create_database, drop_database

if TYPE_CHECKING:  # imported late: see pytest_configure
    from infra.kafka_broker import LocalKafka

# Property tests check invariants, never speed: no deadline per example, which a loaded
# machine (CI, or helpers' runs side by side) would miss now and then and fail the suite for.
settings.register_profile("billcycle", deadline=None)
settings.load_profile("billcycle")

PG_FIXTURES = {"pg_cluster", "postgres_url", "fresh_pg_url"}
KAFKA_FIXTURES = {"kafka_broker", "kafka_bootstrap"}


def _kafka_disabled() -> bool:
    return os.environ.get("BILLCYCLE_SKIP_KAFKA") == "1"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped by SIGTERM (`timeout`, a CI limit, kill) ends as Ctrl-C does: the session's
    # fixtures are torn down, so its PostgreSQL cluster and Kafka broker do not outlive it.
    signal.signal(signal.SIGTERM, _interrupt)
    # kafka-python 3.0.12 loads its protocol schemas with importlib.resources calls that
    # Python 3.11 deprecates: hundreds of warnings that are not ours to fix. These filters
    # only cover imports after this point, so this module imports kafka inside fixtures.
    for message in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if used & KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)
            if _kafka_disabled():
                item.add_marker(pytest.mark.skip(reason="BILLCYCLE_SKIP_KAFKA=1"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalPostgres]:
    """The session's own PostgreSQL cluster (for tests that restart or crash it)."""
    if os.environ.get("BILLCYCLE_TEST_PG_URL"):
        pytest.skip("needs the local cluster; BILLCYCLE_TEST_PG_URL points at another server")
    # Not pytest's tmp_path: as root the server runs as the postgres user, who cannot enter
    # /tmp/pytest-of-root.
    base = tempfile.mkdtemp(prefix="billcycle-pg-")
    with LocalPostgres(base, fast=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> str:
    """URL of the `billcycle` database on the session's server."""
    external = os.environ.get("BILLCYCLE_TEST_PG_URL")
    if external:
        return external
    cluster: LocalPostgres = request.getfixturevalue("pg_cluster")
    return cluster.url


@pytest.fixture
def fresh_pg_url(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database of its own for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    yield create_database(postgres_url, name)
    drop_database(postgres_url, name)


@pytest.fixture(scope="session")
def kafka_broker(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's own Kafka broker (for tests that restart or kill it)."""
    if _kafka_disabled():
        pytest.skip("BILLCYCLE_SKIP_KAFKA=1")
    if os.environ.get("BILLCYCLE_TEST_KAFKA"):
        pytest.skip("needs the local broker; BILLCYCLE_TEST_KAFKA points at another one")
    from infra.kafka_broker import LocalKafka

    with LocalKafka(tempfile.mkdtemp(prefix="billcycle-kafka-")) as broker:
        yield broker
        if request.session.testsfailed:
            _keep_broker_log(request.config, broker, tmp_path_factory.getbasetemp())


GROUP_LINES = 150


def _keep_broker_log(config: pytest.Config, broker: LocalKafka, basetemp: Path) -> None:
    """A failed session keeps its broker's log (the broker's files go with it) and shows what
    the group coordinator said last: where a consumer's join stood is only seen there."""
    kept = basetemp / "kafka-broker-logs"
    shutil.copytree(broker.server_log.parent, kept, dirs_exist_ok=True)
    lines = broker.server_log.read_text(errors="replace").splitlines()
    groups = [line for line in lines if "[GroupCoordinator " in line][-GROUP_LINES:]
    write = config.get_terminal_writer().line
    write(f"\nthe Kafka broker's log of this failed session is kept in {kept}; the group "
          f"coordinator's last {len(groups)} lines:")
    for line in groups:
        write(line)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap address (host:port) of the session's Kafka broker."""
    if _kafka_disabled():
        pytest.skip("BILLCYCLE_SKIP_KAFKA=1")
    external = os.environ.get("BILLCYCLE_TEST_KAFKA")
    if external:
        return external
    broker: LocalKafka = request.getfixturevalue("kafka_broker")
    return broker.bootstrap
