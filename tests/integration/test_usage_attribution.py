"""Which contract prices a usage event: arrival order, tags, and two contracts on one metric."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_run import Outcome
from domain.billing_runs import BillingRuns, RunReport
from infra.store.url import store_env


def contract(cid: str, customer: str = "cus_1") -> dict[str, Any]:
    return {
        "type": "contract.created", "id": f"c-{cid}", "occurred_at": "2026-10-01T00:00:00Z",
        "contract_id": cid, "customer_id": customer, "currency": "USD",
        "start_date": "2026-10-01", "billing_frequency": "monthly",
        "components": [{"id": "api", "kind": "usage", "metric": "api_calls",
                        "pricing": {"model": "per_unit", "unit_amount": "1"}}],
    }


def usage(mid: str, quantity: str, contract_id: str | None = None) -> dict[str, Any]:
    message = {"type": "usage", "id": mid, "occurred_at": "2026-10-10T10:00:00Z",
               "customer_id": "cus_1", "metric": "api_calls", "quantity": quantity}
    if contract_id:
        message["contract_id"] = contract_id
    return message


@pytest.fixture
def app(tmp_path: Path) -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'a.db'}"))
    yield application
    application.close()


def feed(app: BillingApplication, *messages: dict[str, Any]) -> None:
    data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    IngestPipeline(app).process_lines(io.BytesIO(data), "test")


def bill(app: BillingApplication) -> RunReport:
    return BillingRuns(app, lambda: datetime.now(UTC)).run(date(2026, 11, 1))


def totals(report: RunReport) -> dict[str, str]:
    return {i.contract_id: str(i.total) for i in report.invoices}


def test_usage_sent_before_its_contract_is_billed_once_the_contract_exists(
    app: BillingApplication,
) -> None:
    feed(app, usage("u-1", "7"))
    feed(app, contract("ct_1"))
    assert totals(bill(app)) == {"ct_1": "7.00"}


def test_untagged_usage_is_held_when_two_contracts_price_the_metric(
    app: BillingApplication,
) -> None:
    feed(app, contract("ct_1"), contract("ct_2"), usage("u-1", "7"))
    report = bill(app)
    held = {cid: o.reason or "" for cid, o in report.outcomes.items() if o.outcome is Outcome.HELD}
    assert set(held) == {"ct_1", "ct_2"}
    assert "contract_id" in held["ct_1"] and "ct_1, ct_2" in held["ct_1"]


def test_untagged_usage_is_the_contract_active_then_when_the_other_is_not(
    app: BillingApplication,
) -> None:
    # contract.md asks for contract_id only where two *active* contracts price the metric: a
    # renewal starting later, or a contract ended before, does not hold the usage.
    renewal = {**contract("ct_2"), "start_date": "2027-01-01"}
    feed(app, contract("ct_1"), renewal, usage("u-1", "7"))
    assert totals(bill(app)) == {"ct_1": "7.00"}
    # Back to back on the 10th: each bills the untagged usage of its own days.
    feed(app, {**contract("ct_a", "cus_2"), "end_date": "2026-10-10"},
         {**contract("ct_b", "cus_2"), "start_date": "2026-10-10",
          "billing_anchor_date": "2026-10-01"},
         {**usage("u-2", "3"), "customer_id": "cus_2", "occurred_at": "2026-10-05T10:00:00Z"},
         {**usage("u-3", "4"), "customer_id": "cus_2", "occurred_at": "2026-10-20T10:00:00Z"})
    assert {cid: total for cid, total in totals(bill(app)).items() if cid != "ct_1"} == {
        "ct_a": "3.00", "ct_b": "4.00"}


def test_tagged_usage_goes_to_the_contract_it_names(app: BillingApplication) -> None:
    feed(app, contract("ct_1"), contract("ct_2"),
         usage("u-1", "7", "ct_1"), usage("u-2", "5", "ct_2"), usage("u-3", "1", "ct_2"))
    assert totals(bill(app)) == {"ct_1": "7.00", "ct_2": "6.00"}


def test_another_customers_usage_is_never_billed_here(app: BillingApplication) -> None:
    feed(app, contract("ct_1"), contract("ct_9", customer="cus_9"), usage("u-1", "7"))
    assert totals(bill(app)) == {"ct_1": "7.00", "ct_9": "0.00"}


def assign(app: BillingApplication, contract_id: str, start: str, end: str) -> None:
    app.assign_usage("cus_1", "api_calls", contract_id, date.fromisoformat(start),
                     date.fromisoformat(end), "per the account manager", "ops",
                     datetime.now(UTC))


def retry(app: BillingApplication, report: RunReport) -> RunReport:
    return BillingRuns(app, lambda: datetime.now(UTC)).retry(report.batch_id)


def test_untagged_usage_assigned_to_one_contract_is_billed_there_and_nowhere_else(
    app: BillingApplication,
) -> None:
    feed(app, contract("ct_1"), contract("ct_2"), usage("u-1", "7"), usage("u-2", "2", "ct_2"))
    held = bill(app)
    assert totals(held) == {}
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(retry(app, held)) == {"ct_1": "7.00", "ct_2": "2.00"}


def test_untagged_usage_left_unassigned_holds_naming_where_it_lies(
    app: BillingApplication,
) -> None:
    feed(app, contract("ct_1"), contract("ct_2"), usage("u-1", "7"),
         {**usage("u-2", "1"), "occurred_at": "2026-10-20T10:00:00Z"})
    held = bill(app)
    assign(app, "ct_1", "2026-10-01", "2026-10-15")  # u-2 on the 20th is nobody's yet
    again = retry(app, held)
    reasons = {cid: o.reason or "" for cid, o in again.outcomes.items()}
    assert ("1 usage event carries no contract_id: api_calls for customer cus_1 from "
            "2026-10-15 00:00 to 2026-11-01 00:00 UTC") in reasons["ct_1"]
    assert "billcycle usage assign" in reasons["ct_1"]
    assign(app, "ct_2", "2026-10-15", "2026-11-01")  # October's usage split between the two
    assert totals(retry(app, held)) == {"ct_1": "7.00", "ct_2": "1.00"}


def test_a_period_split_between_contracts_in_two_timezones_bills_each_its_own_windows(
    app: BillingApplication,
) -> None:
    # ct_ta's October in Tokyo is [09-30 15:00Z, 10-31 15:00Z), ct_tb's in UTC [10-01, 11-01):
    # an event of 10-31 20:00Z is in ct_tb's October and in ct_ta's November.
    feed(app, {**contract("ct_ta"), "timezone": "Asia/Tokyo",
               "components": [{**contract("ct_ta")["components"][0],
                               "pricing": {"model": "per_unit", "unit_amount": "0.01"}}]},
         {**contract("ct_tb"), "components": [{**contract("ct_tb")["components"][0],
                                               "pricing": {"model": "per_unit",
                                                           "unit_amount": "0.02"}}]},
         {**usage("t-1", "1000"), "occurred_at": "2026-10-05T00:00:00Z"},
         {**usage("t-2", "200"), "occurred_at": "2026-10-31T20:00:00Z"})
    held = bill(app)
    assert totals(held) == {}
    assign(app, "ct_ta", "2026-10-01", "2026-11-01")  # Tokyo's October
    app.assign_usage("cus_1", "api_calls", "ct_tb", datetime(2026, 10, 31, 15, tzinfo=UTC),
                     date(2026, 11, 1), "the evening's jobs", "ops", datetime.now(UTC))
    assert totals(retry(app, held)) == {"ct_ta": "10.00", "ct_tb": "4.00"}
    # ct_ta's November run does not bill the event of ct_tb's window again.
    later = BillingRuns(app, lambda: datetime.now(UTC)).run(date(2026, 12, 1))
    assert totals(later) == {"ct_ta": "0.00", "ct_tb": "0.00"}


def priced(cid: str, unit_amount: str) -> dict[str, Any]:
    created = contract(cid)
    return {**created, "components": [
        {**created["components"][0], "pricing": {"model": "per_unit",
                                                 "unit_amount": unit_amount}}]}


def run_on(app: BillingApplication, day: str) -> RunReport:
    return BillingRuns(app, lambda: datetime.now(UTC)).run(date.fromisoformat(day))


def lines_of(app: BillingApplication, report: RunReport, contract_id: str,
             ) -> list[dict[str, Any]]:
    number = next(i.number for i in report.invoices if i.contract_id == contract_id)
    invoice = app.invoice(number)
    assert invoice is not None
    return invoice.lines


def test_a_wrong_assignment_corrected_after_billing_is_credited_there_and_billed_here(
    app: BillingApplication,
) -> None:
    feed(app, priced("ct_1", "1"), priced("ct_2", "2"), usage("u-1", "7"),
         usage("u-2", "5", "ct_2"))
    held = bill(app)
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(retry(app, held)) == {"ct_1": "7.00", "ct_2": "10.00"}
    assign(app, "ct_2", "2026-10-01", "2026-11-01")  # it was ct_2's all along
    december = run_on(app, "2026-12-01")
    assert totals(december) == {"ct_1": "-7.00", "ct_2": "14.00"}
    credit, november = lines_of(app, december, "ct_1")  # October priced again, November
    charge, _ = lines_of(app, december, "ct_2")
    assert november["amount"] == "0.00"
    assert (credit["kind"], credit["quantity"], credit["amount"]) == ("usage", "-7", "-7.00")
    assert (charge["kind"], charge["quantity"], charge["amount"]) == ("usage", "7", "14.00")
    assert "priced again: the contract changed from 2026-10-01" in charge["description"]
    # Settled: nothing moves again, and later usage of the window is ct_2's alone.
    feed(app, {**usage("u-3", "1"), "occurred_at": "2026-10-28T10:00:00Z"})
    assert totals(run_on(app, "2027-01-01")) == {"ct_1": "0.00", "ct_2": "2.00"}


def test_an_assignment_withdrawn_after_billing_holds_until_given_again(
    app: BillingApplication,
) -> None:
    feed(app, priced("ct_1", "1"), priced("ct_2", "2"), usage("u-1", "7"))
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(bill(app)) == {"ct_1": "7.00", "ct_2": "0.00"}
    app.withdraw_usage_assignment("cus_1", "api_calls", date(2026, 10, 1))
    december = run_on(app, "2026-12-01")
    assert totals(december) == {}  # both read October again: its usage is nobody's
    assert all("1 usage event carries no contract_id" in (o.reason or "")
               for o in december.outcomes.values())
    assign(app, "ct_2", "2026-10-01", "2026-11-01")
    assert totals(retry(app, december)) == {"ct_1": "-7.00", "ct_2": "14.00"}
    assert totals(run_on(app, "2027-01-01")) == {"ct_1": "0.00", "ct_2": "0.00"}


def test_untagged_usage_after_a_rival_ended_is_the_only_active_contracts(
    app: BillingApplication,
) -> None:
    # ct_1 ends on 10-15: the usage of 10-20 has one active contract to go to, ct_2, and needs
    # no assignment; the usage of 10-05 has two, and waits for one.
    feed(app, {**priced("ct_1", "1"), "end_date": "2026-10-15"}, priced("ct_2", "2"),
         {**usage("u-1", "7"), "occurred_at": "2026-10-05T10:00:00Z"},
         {**usage("u-2", "3"), "occurred_at": "2026-10-20T10:00:00Z"})
    held = bill(app)
    assert totals(held) == {}
    assert "from 2026-10-01 00:00 to 2026-10-15 00:00 UTC" in (
        held.outcomes["ct_2"].reason or "")
    assign(app, "ct_1", "2026-10-01", "2026-10-15")
    assert totals(retry(app, held)) == {"ct_1": "7.00", "ct_2": "6.00"}


def test_usage_assigned_to_a_contract_outside_its_service_goes_to_the_active_one(
    app: BillingApplication,
) -> None:
    # October was given to ct_1, which serves only until 10-15: it cannot bill 10-20, where
    # ct_2 is the only active contract (before, neither billed it).
    feed(app, {**priced("ct_1", "1"), "end_date": "2026-10-15"}, priced("ct_2", "2"),
         {**usage("u-1", "7"), "occurred_at": "2026-10-05T10:00:00Z"},
         {**usage("u-2", "3"), "occurred_at": "2026-10-20T10:00:00Z"})
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(bill(app)) == {"ct_1": "7.00", "ct_2": "6.00"}


def test_a_rival_terminated_after_billing_hands_its_later_untagged_usage_over(
    app: BillingApplication,
) -> None:
    feed(app, priced("ct_1", "1"), priced("ct_2", "2"),
         {**usage("u-1", "7"), "occurred_at": "2026-10-05T10:00:00Z"},
         {**usage("u-2", "3"), "occurred_at": "2026-10-20T10:00:00Z"})
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(bill(app)) == {"ct_1": "10.00", "ct_2": "0.00"}
    # ct_1 ended on 10-15 after all: the usage of 10-20 had one active contract, ct_2.
    feed(app, {"type": "contract.terminated", "id": "t-1", "occurred_at": "2026-11-20T00:00:00Z",
               "contract_id": "ct_1", "end_date": "2026-10-15"})
    assert totals(run_on(app, "2026-12-01")) == {"ct_1": "-3.00", "ct_2": "6.00"}
    assert totals(run_on(app, "2027-01-01")) == {"ct_2": "0.00"}


def test_a_contract_pricing_the_metric_only_later_is_no_rival_before(
    app: BillingApplication,
) -> None:
    # ct_1 bills a platform fee and is amended to price api_calls from 2027-01-01: October's
    # untagged usage has one contract pricing it, ct_2 (before, both were held).
    platform = {"id": "platform", "kind": "subscription", "amount": "10.00"}
    feed(app, {**priced("ct_1", "1"), "components": [platform]}, priced("ct_2", "2"),
         {"type": "contract.amended", "id": "a-1", "occurred_at": "2026-10-20T00:00:00Z",
          "contract_id": "ct_1", "effective_date": "2027-01-01",
          "components": [platform, priced("ct_1", "1")["components"][0]]},
         usage("u-1", "7"))
    assert totals(bill(app)) == {"ct_1": "20.00", "ct_2": "14.00"}  # October and November


def test_a_rival_amended_to_stop_pricing_the_metric_hands_its_usage_over(
    app: BillingApplication,
) -> None:
    feed(app, priced("ct_1", "1"), priced("ct_2", "2"), usage("u-1", "7"))
    assign(app, "ct_1", "2026-10-01", "2026-11-01")
    assert totals(bill(app)) == {"ct_1": "7.00", "ct_2": "0.00"}
    # From 10-20 ct_1 bills a platform fee only: October's usage is priced by the terms at
    # its end, so ct_1 prices no api_calls in October, and ct_2 is the only one that does.
    feed(app, {"type": "contract.amended", "id": "a-1", "occurred_at": "2026-11-20T00:00:00Z",
               "contract_id": "ct_1", "effective_date": "2026-10-20",
               "components": [{"id": "platform", "kind": "subscription", "amount": "0"}]})
    assert totals(run_on(app, "2026-12-01")) == {"ct_1": "-7.00", "ct_2": "14.00"}


def test_usage_billed_alone_is_credited_when_given_to_a_contract_created_later(
    app: BillingApplication,
) -> None:
    # ct_1 billed October's untagged usage as the only contract pricing it; ct_2, created
    # afterwards from October, is held until the operator gives the usage to it (QA F1).
    feed(app, priced("ct_1", "1"), usage("u-1", "3"))
    assert totals(bill(app)) == {"ct_1": "3.00"}
    feed(app, priced("ct_2", "2"))
    december = run_on(app, "2026-12-01")
    assert "ct_2" not in totals(december)
    assign(app, "ct_2", "2026-10-01", "2026-11-01")
    assert totals(retry(app, december)) == {"ct_2": "6.00"}
    assert totals(run_on(app, "2027-01-01")) == {"ct_1": "-3.00", "ct_2": "0.00"}

