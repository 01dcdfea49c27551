"""The consumer's progress line before it owns a partition says where its group join stands."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.structs import ConsumerGroupMetadata, MemberState

from consumers.kafka_source import SLOW_JOIN, KafkaIngest, Patience, Topics
from domain.application import BillingApplication
from infra.store.url import store_env


@dataclass
class MemberOfGroup:
    """A consumer as the progress line sees it: its group membership, no partition."""

    member: ConsumerGroupMetadata
    config: dict[str, Any] = field(default_factory=dict)

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.member


@pytest.fixture
def app() -> Iterator[BillingApplication]:
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as application:
        yield application


def progress(app: BillingApplication, state: str, generation: int = -1,
             waited: float = 0.0) -> str:
    said: list[str] = []
    member = ConsumerGroupMetadata("billcycle", generation, "m-1", None, state)
    ingest = KafkaIngest(app, MemberOfGroup(member), Topics(), None,  # type: ignore[arg-type]
                         Patience(said.append, threading.Event()))
    ingest._subscribed -= waited
    ingest._report(force=True)
    return said[-1].partition("rejected; ")[2]


def test_a_member_not_in_its_group_yet_says_it_is_joining(app: BillingApplication) -> None:
    assert progress(app, MemberState.UNJOINED) == (
        "no partition assigned to this member of group billcycle yet (finding the group's "
        "coordinator or joining)")
    assert progress(app, MemberState.REBALANCING) == (
        "no partition assigned to this member of group billcycle yet (rebalancing)")


def test_a_join_that_takes_long_says_how_long_and_where_to_look(app: BillingApplication) -> None:
    assert progress(app, MemberState.UNJOINED, waited=SLOW_JOIN + 5) == (
        "no partition assigned to this member of group billcycle yet (finding the group's "
        f"coordinator or joining, for {SLOW_JOIN + 5:,.0f} s where a join takes a second or "
        "two: see what the broker's log says of group billcycle)")


def test_a_member_its_group_gave_nothing_says_so(app: BillingApplication) -> None:
    # More members than partitions: this one is in the group, with nothing to consume.
    assert progress(app, MemberState.STABLE, generation=4) == (
        "no partition assigned to this member of group billcycle (generation 4): the group "
        "has no partition left for it")
