"""A message holding a value the store cannot hold, which validation let through, is a dead
letter with PostgreSQL's reason: the rest of its batch is applied, its position recorded, and
ingest goes on (contract.md: "Nothing else in the stream is held up or lost")."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from domain.application import BillingApplication
from domain.commands import Command, Origin, RecordUsage
from infra.store.url import store_env

pytestmark = pytest.mark.postgres


def usage(offset: int, message_id: str = "") -> tuple[Command, Origin]:
    """A usage command as the pipeline makes one, but without its validation: the domain
    takes whatever it is given, which is what this net is for."""
    at = datetime(2026, 10, 5, tzinfo=UTC)
    message_id = message_id or f"u-{offset}"
    command = RecordUsage.of(message_id, f"fp-{message_id}", at, "cus_1", "api_calls",
                             Decimal(1), {}, "{}", None, at.isoformat())
    return command, Origin("kafka:billing.usage/0", f"offset {offset}", b"{}")


@pytest.fixture
def app(fresh_pg_url: str) -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env(fresh_pg_url))
    yield application
    application.close()


def test_a_value_postgresql_refuses_is_a_dead_letter_and_the_rest_of_the_batch_is_applied(
    app: BillingApplication,
) -> None:
    batch = [usage(n) for n in range(9)]
    batch[3] = usage(3, "u-3\x00")  # text refuses U+0000
    batch[7] = usage(7, long_id := secrets.token_hex(2000))  # over the index's entry size
    report = app.ingest(batch, (), Tracking("kafka:billing.usage:0", 41))
    assert report.accepted == 7
    assert [r.message_id for r in report.rejected] == ["u-3\x00", long_id]
    assert report.rejected[0].reason.startswith(
        "usage u-3\\u0000: the store cannot hold a value of this message (")
    assert "send the message again, corrected" in report.rejected[0].reason
    recorder: Any = app.recorder
    assert recorder.max_tracking_id("kafka:billing.usage:0") == 41
    assert [d["position"] for d in app.dead_letters()] == [
        "kafka:billing.usage/0@offset 3", "kafka:billing.usage/0@offset 7"]
    # Applied once: the same batch again (a crash before its position was kept) adds nothing.
    again = app.ingest(batch, (), Tracking("kafka:billing.usage:0", 42))
    assert (again.accepted, again.duplicates) == (0, 7)
