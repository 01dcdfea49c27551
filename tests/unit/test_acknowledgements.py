"""Acknowledged unbilled usage: what an acknowledgement needs, which one is in force, and from
which meter bucket the runs' notes read again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from domain.acknowledgements import (
    ACKNOWLEDGEMENTS_ID,
    AcknowledgementRejected,
    UsageAcknowledgements,
    notes_from,
)
from domain.application import BillingApplication
from infra.store.url import store_env

AT = datetime(2026, 12, 2, 9, tzinfo=UTC)


def test_the_latest_acknowledgement_of_a_customer_and_metric_is_in_force() -> None:
    given = UsageAcknowledgements()
    given.acknowledge("cus_b", "api_calls", datetime(2026, 11, 1, tzinfo=UTC), "plan ended",
                      "ops", AT)
    given.acknowledge("cus_a", "storage", datetime(2026, 10, 1, tzinfo=UTC), "trial", "ops", AT)
    later = given.acknowledge("cus_b", "api_calls", datetime(2026, 12, 1, tzinfo=UTC),
                              " still off ", "", AT)
    assert (later.reason, later.by) == ("still off", "unknown")
    assert [(a.customer_id, a.metric, a.through.month) for a in given.in_force()] == [
        ("cus_a", "storage", 10), ("cus_b", "api_calls", 12)]
    assert [a.customer_id for a in given.in_force(["cus_b", "cus_z"])] == ["cus_b"]
    assert len(given.collect_events()) == 4  # opened, and each acknowledgement kept


def test_an_acknowledgement_taken_back_is_no_longer_in_force_and_stays_in_the_log() -> None:
    given = UsageAcknowledgements()
    given.acknowledge("cus_a", "api_calls", datetime(2026, 11, 1, tzinfo=UTC), "one", "ops", AT)
    given.acknowledge("cus_a", "storage", datetime(2026, 10, 1, tzinfo=UTC), "two", "ops", AT)
    with pytest.raises(AcknowledgementRejected, match="give the reason"):
        given.withdraw("cus_a", "api_calls", " ", "ops", AT)
    taken = given.withdraw("cus_a", "api_calls", "billable after all", "ops", AT)
    assert (taken.metric, taken.reason) == ("api_calls", "one")
    assert [a.metric for a in given.in_force()] == ["storage"]
    with pytest.raises(AcknowledgementRejected,
                       match=r"no acknowledgement of cus_a's api_calls is in force \(the "
                             r"customer's: storage\)"):
        given.withdraw("cus_a", "api_calls", "again", "ops", AT)
    given.withdraw("cus_a", "storage", "also", "ops", AT)
    assert given.in_force() == [] and given.given == {}
    assert len(given.collect_events()) == 5  # opened, two given, two taken back


def test_an_acknowledgement_answers_with_itself_beside_others_of_the_customer() -> None:
    given = UsageAcknowledgements()
    given.acknowledge("cus_a", "api_calls", datetime(2026, 11, 1, tzinfo=UTC), "one", "ops", AT)
    second = given.acknowledge("cus_a", "zzz_metric", datetime(2026, 10, 1, tzinfo=UTC), "two",
                               "ops", AT)
    assert (second.metric, second.reason) == ("zzz_metric", "two")


def test_an_acknowledgement_names_its_reason_and_an_instant_with_an_offset() -> None:
    given = UsageAcknowledgements()
    with pytest.raises(AcknowledgementRejected, match="give the reason"):
        given.acknowledge("cus_a", "api_calls", AT, "  ", "ops", AT)
    with pytest.raises(AcknowledgementRejected, match="has no offset"):
        given.acknowledge("cus_a", "api_calls", datetime(2026, 11, 1), "r", "ops", AT)
    with pytest.raises(AcknowledgementRejected, match="name the customer and the metric"):
        given.acknowledge("cus_a", " ", AT, "r", "ops", AT)
    tokyo = given.acknowledge("cus_a", "api_calls",
                              datetime(2026, 11, 1, 9, tzinfo=timezone(timedelta(hours=9))),
                              "r", "ops", AT)
    assert tokyo.through == datetime(2026, 11, 1, tzinfo=UTC)  # kept in UTC


def test_notes_read_again_from_the_bucket_holding_the_instant() -> None:
    given = UsageAcknowledgements()
    for through in (datetime(2026, 11, 1, 10, 7, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)):
        given.acknowledge(f"cus_{through.day}", "api_calls", through, "r", "ops", AT)
    assert notes_from(a.to_json() for a in given.in_force()) == {
        ("cus_1", "api_calls"): datetime(2026, 11, 1, 10, tzinfo=UTC),  # 10:00-10:15 named
        ("cus_2", "api_calls"): datetime(2026, 11, 2, tzinfo=UTC),
    }


def test_many_acknowledgements_come_back_whole_through_the_store(tmp_path: Path) -> None:
    # Snapshotted every 100 events, as the watermarks are: the snapshot keeps every one.
    app = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'b.db'}"))
    try:
        for n in range(130):
            app.acknowledge_usage(f"cus_{n:03d}", "api_calls",
                                  datetime(2026, 11, 1, tzinfo=UTC), f"reason {n}", "ops", AT)
    finally:
        app.close()
    again = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'b.db'}"))
    try:
        given = again.usage_acknowledgements()
        assert again.snapshots is not None and again.snapshots.get(ACKNOWLEDGEMENTS_ID)
    finally:
        again.close()
    assert [(a.customer_id, a.reason) for a in given] == [
        (f"cus_{n:03d}", f"reason {n}") for n in range(130)]
    assert all(a.through == datetime(2026, 11, 1, tzinfo=UTC) and a.at == AT for a in given)


def test_an_acknowledgement_that_loses_a_race_reads_the_winner_and_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    mine, theirs = (BillingApplication(env=store_env(url)) for _ in range(2))
    try:
        mine.acknowledge_usage("cus_a", "api_calls", AT, "first", "ops", AT)
        stale = [mine.get_or_none(ACKNOWLEDGEMENTS_ID, UsageAcknowledgements)]
        theirs.acknowledge_usage("cus_b", "api_calls", AT, "theirs", "ops", AT)  # meanwhile
        read = mine.get_or_none
        monkeypatch.setattr(mine, "get_or_none", lambda aggregate_id, kind: (
            stale.pop() if stale else read(aggregate_id, kind)))
        mine.acknowledge_usage("cus_c", "api_calls", AT, "mine", "ops", AT)
        assert not stale  # the first save went from the stale read, and conflicted
        assert [a.reason for a in theirs.usage_acknowledgements()] == ["first", "theirs", "mine"]
    finally:
        mine.close()
        theirs.close()
