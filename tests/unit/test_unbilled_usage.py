"""Usage no contract bills: summed per customer and metric, noted per contract (unpriced,
outside the service of the contracts pricing it, in periods between them that none bills it
for, or sent with a contract_id naming no contract that prices it), and said by a run."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.billing import usage_windows
from domain.billing_run import ContractOutcome, Outcome
from domain.terms import PerUnit
from domain.unbilled_usage import (
    MeteredUsage,
    UnbilledWindow,
    UsageWithoutContract,
    metered_usage,
    misattributed_usage,
    notes_warning,
    unbilled_windows,
    unpriced_usage,
    usage_in_unbilled_windows,
    usage_outside_service,
    usage_without_contract,
    usage_without_contract_warning,
)
from tests.unit.billing_fixtures import contract, subscription, usage


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def metered(events: int, first: datetime | None = None,
            last: datetime | None = None) -> MeteredUsage:
    """Usage whose buckets lie within October unless told otherwise."""
    return MeteredUsage(events, first or at(2), last or at(30))


def test_buckets_sum_per_customer_and_metric_exactly() -> None:
    buckets = [
        ("cus_a", "api_calls", at(3, 10), 2, Decimal("0.1"), at(3, 10)),
        ("cus_a", "api_calls", at(5, 9), 1, Decimal("0.2"), at(5, 9)),
        ("cus_a", "storage_gb", at(4), 1, Decimal("7"), at(4)),
        ("cus_b", "api_calls", at(1), 3, Decimal("30"), at(2)),
    ]
    assert usage_without_contract(buckets) == [
        UsageWithoutContract("cus_a", "api_calls", 3, Decimal("0.3"), at(3, 10), at(5, 9)),
        UsageWithoutContract("cus_a", "storage_gb", 1, Decimal("7"), at(4), at(4)),
        UsageWithoutContract("cus_b", "api_calls", 3, Decimal("30"), at(1), at(2)),
    ]


def test_the_warning_names_three_customers_and_counts_the_rest() -> None:
    unclaimed = [UsageWithoutContract(f"cus_{i}", "api_calls", 1, Decimal(1), at(i), at(i))
                 for i in range(1, 6)]
    assert usage_without_contract_warning(unclaimed) == (
        "usage of 5 customers with no contract (5 events) is not billed until a contract of "
        "theirs prices it: cus_1 (api_calls: 1 since 2026-10-01); cus_2 (api_calls: 1 since "
        "2026-10-02); cus_3 (api_calls: 1 since 2026-10-03) and 2 more; "
        "`billcycle report usage-without-contract` lists it")


def test_usage_is_unpriced_only_if_no_version_of_any_contract_of_the_customer_prices_it() -> None:
    api = contract(subscription("100.00"), usage("api_calls"))
    storage = contract(usage("storage_gb", component_id="storage"), contract_id="ct_2")
    events = {"api_calls": metered(10), "storage_gb": metered(2), "seats": metered(1)}
    assert unpriced_usage(api, [], events) == (
        "usage of cus_1 that no contract of theirs prices is not billed: seats (1 event), "
        "storage_gb (2 events)")
    # A sibling contract prices storage; only seats is left.
    assert unpriced_usage(api, [storage], events) == (
        "usage of cus_1 that no contract of theirs prices is not billed: seats (1 event)")
    assert unpriced_usage(api, [storage], {"api_calls": metered(3)}) is None
    # Terms amended away from a metric still price the usage of their time.
    storage.amend(date(2026, 11, 1), (subscription("5.00"),), None, None, "m-amend")
    assert unpriced_usage(storage, [], {"storage_gb": metered(2)}) is None


def test_the_run_warning_quotes_the_first_note_and_counts_the_others() -> None:
    notes = [ContractOutcome("ct_1", Outcome.INVOICED, unpriced_usage="usage of cus_1 ..."),
             ContractOutcome("ct_2", Outcome.NOT_DUE),
             ContractOutcome("ct_3", Outcome.HELD, unpriced_usage="usage of cus_3 ...")]
    assert notes_warning((o.unpriced_usage for o in notes), "B-1") == (
        "usage of cus_1 ... (and 1 more); `billcycle batch show B-1` names each contract")
    assert notes_warning((o.unpriced_usage for o in notes[1:2]), "B-1") is None
    # A dry run keeps no batch: its warning points at the real run's.
    assert notes_warning((o.unpriced_usage for o in notes), "B-1", dry_run=True) == (
        "usage of cus_1 ... (and 1 more); the real run's `billcycle batch show` names each "
        "contract")


def test_usage_before_the_service_starts_or_after_it_ends_is_noted() -> None:
    api = contract(usage("api_calls"), start=date(2026, 10, 1), end=date(2026, 11, 1))
    within = metered(10, at(1), datetime(2026, 10, 31, 23, 45, tzinfo=UTC))
    assert usage_outside_service(api, [], {"api_calls": within}) is None
    early_and_late = metered(12, datetime(2026, 9, 30, 23, 45, tzinfo=UTC),
                             datetime(2026, 11, 1, tzinfo=UTC))
    assert usage_outside_service(api, [], {"api_calls": early_and_late}) == (
        "usage of cus_1 outside the service of the contracts pricing it is not billed: "
        "api_calls from 2026-09-30 23:45 UTC, before service starts on 2026-10-01 (ct_1); "
        "api_calls until 2026-11-01 00:15 UTC, after service ended on 2026-11-01 (ct_1)")


def test_the_service_is_read_in_each_contracts_timezone() -> None:
    # Midnight of 2026-10-01 in Tokyo is 15:00 UTC the day before.
    tokyo = contract(usage("api_calls"), timezone="Asia/Tokyo")
    first = datetime(2026, 9, 30, 15, tzinfo=UTC)
    assert usage_outside_service(tokyo, [], {"api_calls": metered(1, first)}) is None
    assert usage_outside_service(
        tokyo, [], {"api_calls": metered(1, first - timedelta(minutes=15))}) is not None


def test_the_service_of_the_customers_contracts_pricing_the_metric_counts_together() -> None:
    ended = contract(usage("api_calls"), start=date(2026, 8, 1), end=date(2026, 10, 1))
    renewal = contract(usage("api_calls"), start=date(2026, 10, 1), contract_id="ct_2")
    other_metric = contract(usage("storage_gb", component_id="gb"), start=date(2026, 1, 1),
                            contract_id="ct_3")
    span = {"api_calls": metered(40, datetime(2026, 8, 3, tzinfo=UTC), at(30))}
    # The renewal has no end, and the ended contract covers August and September.
    assert usage_outside_service(ended, [renewal, other_metric], span) is None
    # Without the renewal, October's usage is after the service; the other contract's
    # earlier start does not count, as it prices another metric.
    assert usage_outside_service(ended, [other_metric], span) == (
        "usage of cus_1 outside the service of the contracts pricing it is not billed: "
        "api_calls until 2026-10-30 00:15 UTC, after service ended on 2026-10-01 (ct_1)")
    # Unpriced usage is left to `unpriced_usage`.
    assert usage_outside_service(renewal, [], {"seats": metered(1, at(1) - timedelta(days=90))}) \
        is None


buckets_strategy = st.lists(
    st.tuples(st.sampled_from(["cus_a", "cus_b", "cus_c"]), st.sampled_from(["api", "gb"]),
              st.integers(1, 28), st.integers(1, 1000),
              st.decimals(min_value=0, max_value=10**6, places=3), st.integers(0, 23)),
    max_size=40)


@given(buckets_strategy)
def test_the_sums_keep_every_event_and_quantity_of_their_customer_and_metric(
    drawn: list[tuple[str, str, int, int, Decimal, int]],
) -> None:
    buckets = sorted((c, m, at(day), n, q, at(day, hour)) for c, m, day, n, q, hour in drawn)
    summed = usage_without_contract(buckets)
    assert [(u.customer_id, u.metric) for u in summed] == sorted({(b[0], b[1]) for b in buckets})
    for u in summed:
        mine = [b for b in buckets if (b[0], b[1]) == (u.customer_id, u.metric)]
        assert u.event_count == sum(b[3] for b in mine)
        assert u.quantity_sum == sum((b[4] for b in mine), Decimal(0))
        assert (u.since, u.latest_at) == (min(b[2] for b in mine), max(b[5] for b in mine))


def test_the_meters_tags_combine_per_customer_and_metric() -> None:
    rows = [
        ("cus_1", "api_calls", "", 4, at(3), at(9)),
        ("cus_1", "api_calls", "ct_9", 2, at(1), at(5)),
        ("cus_1", "api_calls", "ct_1", 1, at(7), at(20)),
        ("cus_1", "storage_gb", "", 3, at(2), at(2)),
        ("cus_2", "api_calls", "ct_2", 5, at(4), at(6)),
    ]
    assert metered_usage(rows) == {
        "cus_1": {"api_calls": MeteredUsage(7, at(1), at(20), {"ct_9": 2, "ct_1": 1}),
                  "storage_gb": MeteredUsage(3, at(2), at(2))},
        "cus_2": {"api_calls": MeteredUsage(5, at(4), at(6), {"ct_2": 5})},
    }


def test_usage_sent_with_a_contract_id_that_prices_nothing_of_it_is_named() -> None:
    api = contract(subscription("100.00"), usage("api_calls"))  # ct_1 of cus_1
    storage = contract(usage("storage_gb", component_id="storage"), contract_id="ct_2")
    usage_of = {
        "api_calls": MeteredUsage(9, at(2), at(30), {"ct_1": 3, "ct_2": 2, "ct_9": 1}),
        "storage_gb": MeteredUsage(4, at(2), at(30), {"ct_2": 4}),
        "seats": MeteredUsage(1, at(2), at(2), {"ct_7": 1}),  # priced by none: unpriced_usage's
    }
    assert misattributed_usage(api, [storage], usage_of) == (
        "usage of cus_1 sent with a contract_id that names no contract pricing it is not "
        "billed: api_calls sent with contract_id ct_2 (2 events; ct_2 does not price "
        "api_calls); api_calls sent with contract_id ct_9 (1 event; no contract ct_9 of cus_1)")
    # Every contract of the customer carries the same note.
    assert misattributed_usage(storage, [api], usage_of) == misattributed_usage(
        api, [storage], usage_of)


def test_a_note_on_usage_read_after_an_acknowledgement_says_so() -> None:
    api = contract(subscription("100.00"), usage("api_calls"))
    read_from = at(10, 9)  # the bucket holding the acknowledged instant
    usage_of = {
        "api_calls": MeteredUsage(2, at(12), at(20), {"ct_9": 2}, read_from=read_from),
        "seats": MeteredUsage(1, at(12), at(12), read_from=read_from),
    }
    acknowledged = "; usage before 2026-10-10 09:00 UTC acknowledged"
    assert misattributed_usage(api, [], usage_of) == (
        "usage of cus_1 sent with a contract_id that names no contract pricing it is not "
        f"billed: api_calls sent with contract_id ct_9 (2 events; no contract ct_9 of cus_1"
        f"{acknowledged})")
    assert unpriced_usage(api, [], usage_of) == (
        f"usage of cus_1 that no contract of theirs prices is not billed: seats (1 event"
        f"{acknowledged})")


def test_usage_sent_with_the_contract_id_of_a_contract_pricing_it_is_not_named() -> None:
    api = contract(subscription("100.00"), usage("api_calls"))
    assert misattributed_usage(api, [], {"api_calls": metered(5)}) is None  # none tagged
    assert misattributed_usage(
        api, [], {"api_calls": MeteredUsage(5, at(2), at(30), {"ct_1": 5})}) is None
    # Terms amended away from a metric still price the usage of their time.
    api.amend(date(2026, 11, 1), (subscription("5.00"),), None, None, "m-amend")
    assert misattributed_usage(
        api, [], {"api_calls": MeteredUsage(5, at(2), at(30), {"ct_1": 5})}) is None


def utc(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def test_a_contracts_usage_windows_leave_out_periods_whose_terms_at_their_end_do_not_price_it(
) -> None:
    api = contract(usage("api_calls"), start=date(2026, 7, 1), timezone="Europe/Paris")
    api.amend(date(2026, 9, 15), (subscription("5.00"),), None, None, "m-drop")
    api.amend(date(2026, 11, 1), (usage("api_calls"),), None, None, "m-again")
    # July and August priced it; September is priced with the terms of its end, which do
    # not; October neither; November again. Windows run from local midnight (Paris, UTC+2
    # in summer, +1 from the end of October).
    assert usage_windows(api, "api_calls", date(2026, 11, 20)) == [
        (datetime(2026, 6, 30, 22, tzinfo=UTC), datetime(2026, 8, 31, 22, tzinfo=UTC)),
        (datetime(2026, 10, 31, 23, tzinfo=UTC), datetime(2026, 11, 30, 23, tzinfo=UTC)),
    ]
    assert usage_windows(api, "storage_gb", date(2026, 11, 20)) == []


def test_no_window_is_read_for_a_contract_pricing_the_same_metrics_all_along() -> None:
    api = contract(usage("api_calls"), start=date(2026, 7, 1))
    api.amend(date(2026, 9, 15), (usage("api_calls", PerUnit(Decimal("0.02"))),), None, None,
              "m-price")
    assert unbilled_windows([api], {"api_calls": metered(9, utc(7, 3), utc(10, 2))}) == []


def test_usage_in_periods_after_terms_amended_away_from_its_metric_is_to_be_read() -> None:
    api = contract(subscription("10.00"), usage("api_calls"), start=date(2026, 7, 1))
    api.amend(date(2026, 9, 15), (subscription("10.00"),), None, None, "m-drop")
    # September is priced with the terms at its end: its usage before the 15th too is unbilled.
    assert unbilled_windows([api], {"api_calls": metered(9, utc(7, 3), utc(10, 2))}) == [
        UnbilledWindow("cus_1", "api_calls", "", utc(9, 1), utc(10, 2, ) + timedelta(minutes=15),
                       "the terms of ct_1 at the end of those periods do not price it"),
    ]
    # Usage that ends with August lies in no such window.
    assert unbilled_windows([api], {"api_calls": metered(9, utc(7, 3), utc(8, 31))}) == []


def test_usage_between_two_contracts_pricing_its_metric_is_to_be_read() -> None:
    ended = contract(usage("api_calls"), start=date(2026, 6, 1), end=date(2026, 8, 1))
    renewal = contract(usage("api_calls"), start=date(2026, 9, 1), contract_id="ct_2")
    usage_of = {"api_calls": MeteredUsage(9, utc(6, 3), utc(9, 20), {"ct_2": 2})}
    assert unbilled_windows([ended, renewal], usage_of) == [
        UnbilledWindow("cus_1", "api_calls", "", utc(8, 1), utc(9, 1),
                       "no contract of cus_1 serves then"),
        # Usage sent with ct_2's id is ct_2's alone: before its start, ct_1 does not read it.
        UnbilledWindow("cus_1", "api_calls", "ct_2", utc(6, 3), utc(8, 1),
                       "ct_2 does not serve then (ct_1 does)"),
        UnbilledWindow("cus_1", "api_calls", "ct_2", utc(8, 1), utc(9, 1),
                       "no contract of cus_1 serves then"),
    ]


def test_usage_outside_the_service_is_read_for_every_tag_and_counted_in_its_note() -> None:
    ended = contract(usage("api_calls"), start=date(2026, 10, 1), end=date(2026, 10, 20))
    usage_of = {"api_calls": MeteredUsage(9, at(1) - timedelta(days=2), at(25), {"ct_9": 1})}
    before = UnbilledWindow("cus_1", "api_calls", None, at(1) - timedelta(days=2), at(1),
                            "before service starts on 2026-10-01")
    after = UnbilledWindow("cus_1", "api_calls", None, at(20), at(25) + timedelta(minutes=15),
                           "after service ended on 2026-10-20")
    assert unbilled_windows([ended], usage_of) == [before, after]
    # What the run read there (every tag: None) is counted; the windows' note leaves it out.
    read = {"api_calls": MeteredUsage(9, at(1) - timedelta(days=2), at(25), {"ct_9": 1},
                                      ((before, 2), (after, 1)))}
    assert usage_outside_service(ended, [], read) == (
        "usage of cus_1 outside the service of the contracts pricing it is not billed: "
        "api_calls from 2026-09-29 00:00 UTC (2 events), before service starts on 2026-10-01 "
        "(ct_1); api_calls until 2026-10-25 00:15 UTC (1 event), after service ended on "
        "2026-10-20 (ct_1)")
    assert usage_in_unbilled_windows(ended, [], read) is None


def test_the_note_names_the_windows_where_events_were_found() -> None:
    api = contract(usage("api_calls"))
    window = UnbilledWindow("cus_1", "api_calls", "", utc(8, 1), utc(9, 1),
                            "no contract of cus_1 serves then")
    tagged = UnbilledWindow("cus_1", "api_calls", "ct_2", utc(6, 3), utc(8, 1),
                            "ct_2 does not serve then (ct_1 does)")
    usage_of = {"api_calls": MeteredUsage(9, utc(6, 3), utc(9, 20), {"ct_2": 2},
                                          ((window, 3), (tagged, 0)))}
    assert usage_in_unbilled_windows(api, [], usage_of) == (
        "usage of cus_1 in periods that no contract of theirs bills it for is not billed: "
        "api_calls from 2026-08-01 00:00 to 2026-09-01 00:00 UTC (3 events; no contract of "
        "cus_1 serves then)")
    assert usage_in_unbilled_windows(api, [], {"api_calls": metered(9)}) is None


def test_every_outcome_note_has_its_rule_in_the_order_a_run_warns_of_them() -> None:
    from domain.billing_run import USAGE_NOTES
    from domain.billing_runs import _USAGE_RULES

    # The last, uncounted_usage, is billing's own (usage_billing.uncounted_note).
    assert (*(note for note, _ in _USAGE_RULES), "uncounted_usage") == USAGE_NOTES
    assert set(USAGE_NOTES) <= set(ContractOutcome.__dataclass_fields__)
