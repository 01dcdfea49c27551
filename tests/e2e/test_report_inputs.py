"""What the reports need and show: a typo in the dunning schedule stops only what reads
collections; days past due are never negative, in text as in JSON."""

from __future__ import annotations

import pytest

from infra.cli import TODAY_ENV
from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract
from tests.e2e.test_payments_by_date import november_credited


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


def test_dunning_withholds_reminders_the_customers_credit_notes_cover(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TODAY_ENV, "2026-12-15")  # the day the reminders are recorded as sent
    # QA (helper-24, F3): credit notes are not applied to invoices, and reminders and a final
    # notice went out for invoices of a customer owed more than they owed by its credit notes.
    big = {**PLATFORM, "amount": "3000.00"}
    billcycle(db, "ingest", "-", stdin=jsonl(
        contract("ct_x", PLATFORM, customer_id="cus_1"), contract("ct_y", big, customer_id="cus_1"),
        contract("ct_z", PLATFORM)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")  # INV-000002: ct_y's 3000.00
    billcycle(db, "ingest", "-", stdin=jsonl({
        "type": "payment.received", "id": "p-y", "occurred_at": "2026-10-10T00:00:00Z",
        "invoice_number": "INV-000002", "amount": "3000.00", "currency": "USD"}, {
        "type": "contract.terminated", "id": "t-y", "occurred_at": "2026-10-20T00:00:00Z",
        "contract_id": "ct_y", "end_date": "2026-10-01"}))
    billcycle(db, "run", "--cycle-date", "2026-11-01")  # ct_y's 3000.00 back: a credit note
    found = billcycle_json(db, "collections", "--as-of", "2026-12-15")
    # cus_1 owes 1000.00 (October) + 1000.00 (November) - 3000.00 (paid, credited) net.
    assert {a["customer_id"] for a in found["withheld"]} == {"cus_1"}
    assert {a["customer_owes"] for a in found["withheld"]} == {"-1000.00"}
    assert {(a["customer_id"], a["customer_owes"]) for a in found["actions"]} == {
        ("cus_ct_z", "2000.00")}
    recorded = billcycle_json(db, "collections", "--as-of", "2026-12-15", "--record")
    assert recorded["recorded"] == len(found["actions"])  # the withheld are not sent
    text = billcycle(db, "collections", "--as-of", "2026-12-15").stdout
    assert "or the customer owing nothing net" in text
    assert "(cus_1, credit notes settle 1000.00, owes -1000.00 USD net)" in text


def test_dunning_withholds_reminders_on_an_invoice_a_credit_note_settles(db: str) -> None:
    # The customer owes November's 1000.00 net, but November's credit note settles October's
    # invoice, the oldest: reminders chase November's, not October's.
    november_credited(db)
    found = billcycle_json(db, "collections", "--as-of", "2026-12-20")
    assert {(a["number"], a["credited"]) for a in found["withheld"]} == {("INV-000001", "1000.00")}
    assert {(a["number"], a["customer_owes"], a["credited"]) for a in found["actions"]} == {
        ("INV-000002", "1000.00", "0.00")}
    assert {a["to_collect"] for a in found["actions"]} == {"1000.00"}
