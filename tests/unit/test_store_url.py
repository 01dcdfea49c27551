"""Store URLs become the environment that picks and configures the store factory."""

from __future__ import annotations

import os

import pytest
from eventsourcing.persistence import InfrastructureFactory

from infra.store.postgres import PostgresBillingFactory, PostgresBillingRecorder
from infra.store.sqlite import SQLiteBillingFactory, SQLiteBillingRecorder
from infra.store.url import store_env


def test_sqlite_paths_relative_and_absolute() -> None:
    env = store_env("sqlite:///data/billcycle.db")
    assert env["PERSISTENCE_MODULE"] == "infra.store.sqlite"
    # Resolved now, so a later chdir cannot move the database.
    assert env["SQLITE_DBNAME"] == os.path.abspath("data/billcycle.db")
    assert env["CREATE_TABLE"] == "y"
    assert store_env("sqlite:////var/lib/billcycle.db")["SQLITE_DBNAME"] == "/var/lib/billcycle.db"


def test_sqlite_memory_is_one_private_database_per_call() -> None:
    first = store_env("sqlite:///:memory:")["SQLITE_DBNAME"]
    second = store_env("sqlite:///:memory:")["SQLITE_DBNAME"]
    assert first.startswith("file:billcycle-")
    assert first.endswith("?mode=memory&cache=shared")
    assert first != second


def test_sqlite_memory_store_works_end_to_end() -> None:
    factory = InfrastructureFactory.construct(store_env("sqlite:///:memory:"))
    assert isinstance(factory, SQLiteBillingFactory)
    assert isinstance(factory.application_recorder(), SQLiteBillingRecorder)
    assert isinstance(factory.process_recorder(), SQLiteBillingRecorder)
    factory.close()


def test_postgres_url() -> None:
    env = store_env("postgresql://bill%40ops:p%2Fss@db.internal:6543/billing")
    assert env["PERSISTENCE_MODULE"] == "infra.store.postgres"
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("bill@ops", "p/ss")
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.internal", "6543")
    assert env["POSTGRES_DBNAME"] == "billing"
    # Writers queue on the events table lock rather than fail at once.
    assert int(env["POSTGRES_LOCK_TIMEOUT"]) > 0
    assert env["CREATE_TABLE"] == "y"
    # With it the library would skip the tracking, meter and contract writes.
    assert "POSTGRES_ENABLE_DB_FUNCTIONS" not in env


def test_postgres_alias_defaults_and_socket_host() -> None:
    env = store_env("postgres://billcycle@localhost/billing")
    assert (env["POSTGRES_PORT"], env["POSTGRES_PASSWORD"]) == ("5432", "")
    socket = store_env("postgresql://billcycle@/billing?host=/run/postgresql")
    assert socket["POSTGRES_HOST"] == "/run/postgresql"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://root:secret@db/billing",
            'unsupported store URL "mysql://root:***@db/billing"; '
            "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
        ),
        ("sqlite:///", "has no database path"),
        ("sqlite://host/billing.db", "has a host part"),
        ("postgresql://db:5432/billing", "needs a user, a host and a database name"),
        ("postgresql://bill@db:5432/", "needs a user, a host and a database name"),
        ("postgresql://bill@db/billing?sslmode=require", "unknown parameter(s) sslmode"),
    ],
)
def test_bad_urls_say_what_to_do(url: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        store_env(url)
    assert message in str(refused.value)
    assert "secret" not in str(refused.value)


def test_postgres_factory_found_by_module_name() -> None:
    # Constructing the factory opens no connection.
    factory = InfrastructureFactory.construct(store_env("postgresql://bill@127.0.0.1:1/billing"))
    assert isinstance(factory, PostgresBillingFactory)
    assert factory.process_recorder_class is PostgresBillingRecorder
    factory.close()


def test_postgres_factory_refuses_db_functions() -> None:
    env = {
        **store_env("postgresql://bill@127.0.0.1:1/billing"),
        "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
    }
    with pytest.raises(OSError, match="unset POSTGRES_ENABLE_DB_FUNCTIONS"):
        InfrastructureFactory.construct(env)


@pytest.mark.parametrize("setting", ["COMPRESSOR_TOPIC", "CIPHER_TOPIC"])
@pytest.mark.parametrize("url", ["sqlite:///:memory:", "postgresql://bill@127.0.0.1:1/billing"])
def test_factories_refuse_opaque_event_state(setting: str, url: str) -> None:
    with pytest.raises(OSError, match=f"unset {setting}"):
        InfrastructureFactory.construct({**store_env(url), setting: "zlib"})
