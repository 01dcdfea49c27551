"""No child process outlives its test, even one that failed before stopping it."""

from __future__ import annotations

import sys

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Before the fixtures' teardown (a child still connected to the test's database, or
    # retrying the stopped broker for ever, would outlive them). Only where a test started
    # children: kafka_support imports kafka-python.
    support = sys.modules.get("tests.integration.kafka_support")
    if support is not None:
        support.stop_children()
