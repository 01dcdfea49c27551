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
