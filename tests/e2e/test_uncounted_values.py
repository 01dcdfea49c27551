"""unique_count through the CLI: a value it does not count (a decimal, null, array or object)
is accepted, counts nobody, and every run that bills its period says so (QA's F3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.cli import billcycle, billcycle_json
from tests.e2e.test_cli_billing import contract
from tests.e2e.test_unbilled_usage import ingest

USERS = {"id": "users", "kind": "usage", "metric": "active_users",
         "aggregation": "unique_count", "unique_property": "user",
         "pricing": {"model": "per_unit", "unit_amount": "2.00"}}


def seen(mid: str, when: str, **properties: Any) -> dict[str, Any]:
    return {"type": "usage", "id": mid, "occurred_at": when, "customer_id": "cus_ct_u",
            "metric": "active_users", "quantity": "1", "properties": properties}


def test_values_unique_count_does_not_count_are_named_by_the_run_that_bills_them(
    db: str, tmp_path: Path
) -> None:
    # QA's messages: 1.5 arrives before the contract counting `user` (topics arrive in any
    # order), 2.5 and null after it, one message has no user; alice is counted.
    ingest(db, tmp_path, "before.jsonl", seen("u-1", "2026-10-03T10:00:00Z", user=1.5))
    ingest(db, tmp_path, "october.jsonl", contract("ct_u", USERS),
           seen("u-2", "2026-10-04T10:00:00Z", user=2.5),
           seen("u-3", "2026-10-05T10:00:00Z", user=None),
           seen("u-4", "2026-10-06T10:00:00Z"),
           seen("u-5", "2026-10-07T10:00:00Z", user="alice"))

    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    note = ("usage of cus_ct_u whose counted property holds a value unique_count does not "
            "count (a decimal, null, array or object) counts nobody: users (active_users) "
            "2026-10-01 to 2026-11-01: 3 events whose user is not counted, e.g. u-1 (a "
            "decimal); unique_count counts string, integer and boolean values: fix the "
            "producer; an event sent again under a new id with the value as a string is "
            "counted by the next run (and is usage of its metric for every other component "
            "too)")
    assert run["warnings"] == [f"{note}; `billcycle batch show nov` names each contract"]
    [invoice] = billcycle_json(db, "invoices", "--contract", "ct_u")
    [line] = invoice["lines"]
    assert (line["kind"], line["quantity"], line["amount"]) == ("usage", "1", "2.00")
    [outcome] = billcycle_json(db, "batch", "show", "nov")["contracts"]
    assert outcome["uncounted_usage"] == note
    assert "whose user is not counted" in billcycle(db, "batch", "show", "nov").stdout
    [explained] = billcycle_json(db, "explain", invoice["number"])["lines"]
    assert ("3 of the events count nobody: their user is a decimal, null, array or object, "
            "which unique_count does not count (e.g. u-1 (a decimal))") in explained["explanation"]
    billcycle(db, "batch", "verify", "nov")

    # The producer sends two again under new ids, as strings: the next run counts them, as
    # late usage. Billing the period again, it names what still counts nobody there: the
    # messages as first sent stay in the log as they were.
    ingest(db, tmp_path, "again.jsonl", seen("u-1b", "2026-10-03T10:00:00Z", user="1.5"),
           seen("u-2b", "2026-10-04T10:00:00Z", user="2.5"))
    later = billcycle_json(db, "run", "--cycle-date", "2026-11-02", "--batch-id", "nov-2")
    [late] = [i for i in billcycle_json(db, "invoices", "--contract", "ct_u")
              if i["batch_id"] == "nov-2"]
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in late["lines"]] == [
        ("late_usage", "3", "4.00")]
    assert later["warnings"] == [f"{note}; `billcycle batch show nov-2` names each contract"]
    # A run with nothing to bill for the period says nothing of it.
    assert billcycle_json(db, "run", "--cycle-date", "2026-11-03")["warnings"] == []
