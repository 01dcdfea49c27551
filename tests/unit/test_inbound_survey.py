"""What `consume --until-caught-up` waits for in a partition it does not own: its records up to
the end offset it had when first seen, less those retention deleted and transaction markers."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition

from consumers.inbound_survey import InboundSurvey

TP = TopicPartition("billing.usage", 0)


@dataclass
class Reader:
    """A consumer outside the group reading `TP`, whose offsets in `records` hold records and
    the others transaction markers."""

    records: set[int]
    position_: int = 0
    seeks: list[int] = field(default_factory=list)

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)
        self.position_ = offset

    def position(self, tp: TopicPartition) -> int:
        return self.position_

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        found = sorted(o for o in self.records if o >= self.position_)
        self.position_ = found[0] + 1 if found else self.position_ + 100  # markers skipped
        return {TP: [SimpleNamespace(offset=found[0])]} if found else {}

    def close(self) -> None:
        pass


def no_reader() -> Reader:
    raise AssertionError("nothing to look into")


def test_a_partition_is_waited_for_up_to_its_end_offset_when_first_seen() -> None:
    survey = InboundSurvey(no_reader)
    survey.update({TP: None}, {TP: 0}, {TP: 10})
    assert survey.short(TP) and survey.lag(TP) == 10
    survey.update({TP: 9}, {TP: 0}, {TP: 25})  # 15 more arrived since: not waited for
    assert survey.in_store(TP, 1.0) and survey.lag(TP) == 15


def test_records_deleted_by_retention_before_they_were_consumed_are_not_waited_for() -> None:
    survey = InboundSurvey(no_reader)
    survey.update({TP: 3}, {TP: 40}, {TP: 40})  # offsets 4 to 39 are gone
    assert survey.in_store(TP, 1.0) and survey.lag(TP) == 0


def test_offsets_after_the_last_record_holding_only_markers_are_not_waited_for() -> None:
    reader = Reader(records={0, 1, 2})
    survey = InboundSurvey(lambda: reader)
    survey.update({TP: 2}, {TP: 0}, {TP: 4})  # offset 3: a commit marker
    assert survey.lag(TP) == 1
    assert survey.in_store(TP, 1.0) and survey.lag(TP) == 0
    assert survey.in_store(TP, 1.0) and reader.seeks == [3]  # looked into once


def test_a_record_not_in_the_store_is_waited_for() -> None:
    survey = InboundSurvey(lambda: Reader(records={0, 1, 2, 3}))
    survey.update({TP: 1}, {TP: 0}, {TP: 4})
    assert not survey.in_store(TP, 1.0) and survey.lag(TP) == 2
