"""What the reports need and show: a typo in the dunning schedule stops only what reads
collections; days past due are never negative, in text as in JSON."""

from __future__ import annotations

import pytest

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract


@pytest.fixture
def billed(db: str) -> str:
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_r", PLATFORM, payment_terms_days=10)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")  # INV-000001, 1000.00, due 10-11
    return db


def test_a_bad_collection_schedule_stops_collections_but_not_the_reports(
    billed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QA (helper-24, F4): every read command failed, the month-end revenue report among them.
    monkeypatch.setenv("BILLCYCLE_COLLECTION_SCHEDULE", "reminder:x")
    revenue = billcycle(billed, "--json", "report", "revenue", "--as-of", "2026-10-31")
    assert revenue.returncode == 0 and '"billed": "1000.00"' in revenue.stdout
    assert ("BILLCYCLE_COLLECTION_SCHEDULE: collection step 'reminder:x' is not KIND:DAYS"
            in revenue.stderr and "collections are not started or ended until it is fixed"
            in revenue.stderr)
    refused = billcycle(billed, "collections", "--as-of", "2026-11-30", check=False)
    assert refused.returncode == 1 and "reminder:x" in refused.stderr
    # Fixed: the collection starts with the schedule in force then, and its actions are due.
    monkeypatch.delenv("BILLCYCLE_COLLECTION_SCHEDULE")
    due = billcycle_json(billed, "collections", "--as-of", "2026-11-30")["actions"]
    assert [a["step"] for a in due] == ["reminder+7", "reminder+14", "final_notice+30"]


def test_a_document_not_yet_due_is_zero_days_past_due_in_the_text_too(billed: str) -> None:
    # QA (helper-24, F6): the text said -6 where --json said 0.
    text = billcycle(billed, "report", "ar-aging", "--as-of", "2026-10-05", "--detail").stdout
    row = next(line for line in text.splitlines() if line.startswith("INV-000001"))
    assert row.split()[4] == "0"
    [item] = billcycle_json(billed, "report", "ar-aging", "--as-of", "2026-10-05",
                            "--detail")["USD"]["items"]
    assert item["days_past_due"] == 0
