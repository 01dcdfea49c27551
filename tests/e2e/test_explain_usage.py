"""`explain` traces a usage line to what it counted: the earlier invoices that billed what a
late usage line says was "already billed", and (`--usage`) the usage events of the line read
from the log as of the meters' revision the line was billed at (qa14, M4)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import API, PLATFORM, contract, usage

SEATS = {"id": "seats", "kind": "usage", "metric": "logins", "aggregation": "unique_count",
         "unique_property": "user", "pricing": {"model": "per_unit", "unit_amount": "5"}}


def login(mid: str, user: Any, when: str) -> dict[str, Any]:
    return {**usage(mid, "cus_ct_1", "logins", "1", when), "properties": {"user": user}}


def october_then_late_usage(db: str) -> None:
    """October's usage billed on INV-000001; more October usage arrives late and is billed,
    with November's, on INV-000002."""
    billcycle(db, "ingest", "-", stdin=jsonl(
        contract("ct_1", PLATFORM, API, SEATS),
        usage("u-1", "cus_ct_1", "api_calls", "3500", "2026-10-03T10:00:00Z"),
        {**usage("u-2", "cus_ct_1", "api_calls", "1500", "2026-10-20T10:00:00Z"),
         "contract_id": "ct_1"},
        usage("o-1", "cus_other", "api_calls", "99", "2026-10-07T10:00:00Z"),  # not theirs
        login("l-1", "ann", "2026-10-04T10:00:00Z"),
        login("l-2", "bob", "2026-10-05T10:00:00Z"),
        login("l-3", "ann", "2026-10-06T10:00:00Z"),
        login("l-4", 1.5, "2026-10-07T10:00:00Z")))  # a decimal: counts nobody
    billcycle(db, "run", "--cycle-date", "2026-11-01")
    billcycle(db, "ingest", "-", stdin=jsonl(
        usage("u-3", "cus_ct_1", "api_calls", "2000", "2026-10-31T23:59:59Z"),
        usage("u-4", "cus_ct_1", "api_calls", "10", "2026-11-01T00:00:00Z")))
    billcycle(db, "run", "--cycle-date", "2026-12-01")


def test_a_late_usage_line_names_the_invoices_that_billed_what_it_deducts(db: str) -> None:
    october_then_late_usage(db)
    [late] = [line for line in billcycle_json(db, "explain", "INV-000002")["lines"]
              if line["kind"] == "late_usage"]
    assert late["basis"]["already_billed"] == "8.00"
    assert late["billed_before"] == [{
        "number": "INV-000001", "issue_date": "2026-11-01", "line": 2, "kind": "usage",
        "amount": "8.00", "period_start": "2026-10-01", "period_end": "2026-11-01"}]
    assert sum(Decimal(b["amount"]) for b in late["billed_before"]) == Decimal("8.00")
    assert "less 8.00 already billed for the period (8.00 on INV-000001 line 3)" in billcycle(
        db, "explain", "INV-000002").stdout


def counted_usage(db: str, number: str, line: int) -> dict[str, Any]:
    said: dict[str, Any] = billcycle_json(
        db, "explain", number, "--line", str(line), "--usage")["lines"][0]["counted_usage"]
    return said


def test_a_usage_line_lists_the_usage_events_it_counted(db: str) -> None:
    october_then_late_usage(db)
    # INV-000001 line 3: October's api_calls, sent with the contract's id or without one;
    # not another customer's. Logged by then: the two sent before the run.
    october = counted_usage(db, "INV-000001", 3)
    assert [(e["message_id"], e["quantity"], e["contract_id"]) for e in october["events"]] == [
        ("u-1", "3500", None), ("u-2", "1500", "ct_1")]
    assert (october["quantity"], october["billed_quantity"], october["agrees"]) == (
        "5000", "5000", True)
    assert (october["from"], october["to"]) == ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")
    # The late usage line of INV-000002 counts October again with u-3, logged since, and not
    # u-4 (November's, from its first instant).
    [late] = [i for i, line in enumerate(billcycle_json(db, "explain", "INV-000002")["lines"])
              if line["kind"] == "late_usage"]
    again = counted_usage(db, "INV-000002", late + 1)
    assert [e["message_id"] for e in again["events"]] == ["u-1", "u-2", "u-3"]
    assert again["quantity"] == "7000" and again["agrees"]
    assert again["through_position"] > october["through_position"]
    assert all(e["log_position"] <= again["through_position"] for e in again["events"])
    # unique_count: each event with the value it counted; a decimal counts nobody.
    seats = counted_usage(db, "INV-000001", 4)
    assert [(e["message_id"], e["value"], e["counts_as"]) for e in seats["events"]] == [
        ("l-1", "ann", "ann"), ("l-2", "bob", "bob"), ("l-3", "ann", "ann"),
        ("l-4", 1.5, None)]
    assert (seats["counted_values"], seats["quantity"], seats["agrees"]) == (
        ["ann", "bob"], "2", True)
    text = billcycle(db, "explain", "INV-000001", "--usage").stdout
    assert ("usage counted: api_calls sent with contract_id ct_1 or without one, "
            "2026-10-01T00:00:00Z to 2026-11-01T00:00:00Z") in text
    assert "2 events, sum 5000 (the line's quantity)" in text
    assert "distinct user values counted: ann, bob" in text


def test_explain_line_out_of_range_is_refused(db: str) -> None:
    october_then_late_usage(db)
    refused = billcycle(db, "explain", "INV-000001", "--line", "9", check=False)
    assert refused.returncode != 0 and "INV-000001 has 4 lines, not a line 9" in refused.stderr
