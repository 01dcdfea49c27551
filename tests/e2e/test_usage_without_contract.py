"""Usage that arrives before its customer's contract is kept, named by every run until a
contract bills it, and then billed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import API, PLATFORM, contract, usage


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'billcycle.db'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


def ingest(db: str, tmp_path: Path, name: str, *messages: dict[str, object]) -> None:
    path = tmp_path / name
    path.write_bytes(jsonl(*messages))
    assert billcycle_json(db, "ingest", str(path))["rejected"] == []


def test_usage_before_its_contract_is_named_by_each_run_then_billed_once(
    db: str, tmp_path: Path
) -> None:
    # Usage of cus_ct_new arrives before its contract (topics arrive in any order).
    ingest(db, tmp_path, "october.jsonl",
           contract("ct_hybrid", PLATFORM),
           usage("u-1", "cus_ct_new", "api_calls", "2000", "2026-10-03T10:00:00Z"),
           usage("u-2", "cus_ct_new", "api_calls", "1500", "2026-10-20T08:30:00Z"))

    # The run bills what it can and names the usage no contract bills yet.
    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert run["counts"]["invoiced"] == 1
    [warning] = run["warnings"]
    assert warning.startswith("usage of 1 customer with no contract (2 events) is not billed "
                              "until a contract of theirs prices it: cus_ct_new (api_calls: 2 "
                              "since 2026-10-03)")
    assert billcycle_json(db, "report", "usage-without-contract") == [{
        "customer_id": "cus_ct_new", "metric": "api_calls", "events": 2, "quantity": "3500",
        "since": "2026-10-03T10:00:00+00:00", "latest_at": "2026-10-20T08:30:00+00:00"}]
    # ... and the batch keeps it, for whoever explains the run later.
    shown = billcycle_json(db, "batch", "show", "nov")
    assert shown["manifest"]["usage_without_contract"] == {"customers": 1, "events": 2}
    assert ("usage without a contract, not billed: 1 customer, 2 events"
            in billcycle(db, "batch", "show", "nov").stdout)

    # The contract arrives: the next run bills the usage, once, and nothing is left over.
    ingest(db, tmp_path, "contract.jsonl", contract("ct_new", API))
    later = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov-2")
    assert later["warnings"] == [] and later["counts"]["invoiced"] == 1
    [invoice] = billcycle_json(db, "invoices", "--contract", "ct_new")
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in invoice["lines"]] == [
        ("usage", "3500", "5.00")]  # 1,000 free, 2,500 at 0.002
    assert billcycle_json(db, "report", "usage-without-contract") == []
    assert "no usage without a contract" in billcycle(
        db, "report", "usage-without-contract").stdout
