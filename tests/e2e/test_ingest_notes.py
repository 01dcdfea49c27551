"""What the operator is told of changes after invoicing: ingest notes on changes that reach
invoiced periods or extend service, a run's warning for a cycle date earlier than one already
billed, and what explain says of the credits such changes make."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli import billcycle, billcycle_json
from tests.e2e.test_cli_billing import API, contract
from tests.e2e.test_unbilled_usage import ingest


def test_ingest_says_when_a_change_reaches_invoiced_periods_or_extends_service(
    db: str, tmp_path: Path
) -> None:
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API, end_date="2026-12-01"))
    billcycle(db, "run", "--cycle-date", "2026-11-01")
    amended = tmp_path / "amended.jsonl"
    amended.write_text(json.dumps({
        "type": "contract.amended", "id": "m-am", "occurred_at": "2026-11-05T00:00:00Z",
        "contract_id": "ct_a", "effective_date": "2026-10-15", "components": [API]}) + "\n")
    said = billcycle_json(db, "ingest", str(amended))
    assert said["notes"] == [
        "contract ct_a amended from 2026-10-15, within periods already invoiced: its next "
        "invoice credits and charges the difference for them"]
    later = tmp_path / "later.jsonl"
    later.write_text(json.dumps({
        "type": "contract.terminated", "id": "m-end", "occurred_at": "2026-11-06T00:00:00Z",
        "contract_id": "ct_a", "end_date": "2026-12-15"}) + "\n")
    assert billcycle_json(db, "ingest", str(later))["notes"] == [
        "contract ct_a: the termination moves its end from 2026-12-01 to 2026-12-15, later: "
        "service is extended and billed to the new end; check the end date"]


def test_a_run_for_an_earlier_cycle_date_than_already_billed_says_so(
    db: str, tmp_path: Path
) -> None:
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API))
    billcycle(db, "run", "--cycle-date", "2026-11-01")
    earlier = billcycle_json(db, "run", "--cycle-date", "2026-10-15")
    assert earlier["warnings"] == [
        "1 contract(s) were already billed for a later cycle date, up to 2026-11-01 (e.g. "
        "ct_a, 2026-11-01): a run bills what was due by its cycle date 2026-10-15 and not yet "
        "billed, so this one bills little or nothing for them; check --cycle-date"]
    assert billcycle_json(db, "run", "--cycle-date", "2026-11-01")["warnings"] == []


def test_explain_says_why_a_withdrawn_usage_credit_and_a_proration_credit_have_their_amounts(
    db: str, tmp_path: Path
) -> None:
    platform = {"id": "platform", "kind": "subscription", "amount": "310.00"}
    api = {"id": "api", "kind": "usage", "metric": "api_calls", "minimum_amount": "50.00",
           "pricing": {"model": "per_unit", "unit_amount": "1"}}
    ingest(db, tmp_path, "book.jsonl", contract("ct_e", platform, api),
           {"type": "usage", "id": "u-1", "occurred_at": "2026-10-05T10:00:00Z",
            "customer_id": "cus_ct_e", "metric": "api_calls", "quantity": "7"})
    billcycle(db, "run", "--cycle-date", "2026-11-01")  # October: 7.00, true-up 43.00
    amended = tmp_path / "amended.jsonl"
    amended.write_text(json.dumps({
        "type": "contract.amended", "id": "m-am", "occurred_at": "2026-11-05T00:00:00Z",
        "contract_id": "ct_e", "effective_date": "2026-10-21",
        "components": [{**platform, "amount": "620.00"}]}) + "\n")
    billcycle(db, "ingest", str(amended))
    billcycle(db, "run", "--cycle-date", "2026-11-05")
    said = billcycle(db, "explain", "INV-000002").stdout
    assert "7.00 billed for the period is owed no more (billed on INV-000001)" in said
    assert "43.00 billed for the period is owed no more" in said
    assert "as billed, less the rounded worth of its days kept" in said
