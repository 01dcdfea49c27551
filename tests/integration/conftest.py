"""No child process outlives its test, even one that failed before stopping it; and a store of
each kind for the tests that run on both (a module may define its own `url` and `app`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from domain.application import BillingApplication
from infra.store.url import store_env


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Before the fixtures' teardown (a child still connected to the test's database, or
    # retrying the stopped broker for ever, would outlive them). Only where a test started
    # children: kafka_support imports kafka-python.
    support = sys.modules.get("tests.integration.kafka_support")
    if support is not None:
        support.stop_children()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a SQLite file, or a new PostgreSQL database from tests/conftest.py."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return cast(str, request.getfixturevalue("fresh_pg_url"))


@pytest.fixture
def kind(url: str) -> str:
    """The store `url` is."""
    return "sqlite" if url.startswith("sqlite") else "postgres"


@pytest.fixture
def app(url: str) -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env(url))
    yield application
    application.close()
