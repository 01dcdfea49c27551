"""What consume says when it sends dead letters from the database to the dead-letter topic:
why they were kept there, and how many, in words that fit one as well as several."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest
from eventsourcing.persistence import Tracking
from kafka import TopicPartition

from consumers.deadletter_topic import DeadLetterTopic
from consumers.patience import Patience
from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.commands import Origin
from infra.store.url import store_env

USAGE_0 = TopicPartition("billing.usage", 0)


@dataclass
class SentAtOnce:
    """A producer whose every send has arrived."""

    sent: list[bytes] = field(default_factory=list)

    def send(self, topic: str, value: bytes, **kwargs: Any) -> SentAtOnce:
        self.sent.append(value)
        return self

    def flush(self, timeout: float | None = None) -> None:
        pass

    def get(self, timeout: float | None = None) -> None:
        pass


@pytest.fixture
def app() -> Iterator[BillingApplication]:
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as application:
        yield application


def rejected_records(app: BillingApplication, count: int) -> list[Any]:
    """`count` unreadable records at the start of billing.usage/0, consumed: dead letters in
    the store, their partition's position at the last of them."""
    origins = [Origin("kafka:billing.usage/0", f"offset {n}", b"not json") for n in range(count)]
    report = IngestPipeline(app).process(origins, Tracking("kafka:billing.usage:0", count - 1))
    assert len(report.rejected) == count
    return list(report.rejected)


def dead_letter_topic(app: BillingApplication, said: list[str]) -> tuple[DeadLetterTopic,
                                                                          SentAtOnce]:
    producer = SentAtOnce()
    return DeadLetterTopic(app, producer, "billing.deadletter",
                           Patience(said.append, threading.Event())), producer


@pytest.mark.parametrize("count, letters", [(1, "1 dead letter"), (2, "2 dead letters")])
def test_dead_letters_kept_while_the_topic_was_missing_are_sent_once_it_exists(
    app: BillingApplication, count: int, letters: str
) -> None:
    said: list[str] = []
    topic, producer = dead_letter_topic(app, said)
    topic.found(False)  # the topic does not exist: the dead letters wait in the store
    topic.publish(USAGE_0, rejected_records(app, count), {}, settled_through=count - 1)
    assert producer.sent == [] and topic.held == count

    topic.found(True)

    assert len(producer.sent) == count and topic.held == 0
    assert said[-2:] == [
        "topic billing.deadletter exists now",
        f"sending {letters} to billing.deadletter: kept in the database while it did not "
        "exist"]


@pytest.mark.parametrize("count, letters", [(1, "1 dead letter"), (3, "3 dead letters")])
def test_dead_letters_a_previous_consume_left_in_the_database_are_not_said_to_be_sent_again(
    app: BillingApplication, count: int, letters: str
) -> None:
    # The last consume stopped with them unsent (its dead-letter topic did not exist), or
    # crashed before it marked them sent: which of the two is not known, so not "again".
    rejected_records(app, count)
    said: list[str] = []
    topic, producer = dead_letter_topic(app, said)

    topic.recover({USAGE_0: count - 1})

    assert len(producer.sent) == count
    assert said == [f"sending {letters} to billing.deadletter: kept in the database, not known "
                    "to have reached it before the last stop"]
    assert not any("again" in line for line in said)
