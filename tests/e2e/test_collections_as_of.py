"""`collections --as-of D` judges each invoice as the books stood at the end of D, so that it
reconciles to `report ar-aging --as-of D` for any D, past ones included; `--record` records
only the actions that still stand on everything the books hold (docs/accounting.md,
"Collections")."""

from __future__ import annotations

from typing import Any

import pytest

from infra.cli import TODAY_ENV
from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract
from tests.e2e.test_payments_by_date import aging, paid

FIRST_STEP = 7  # days after the due date: the default schedule's first reminder


@pytest.fixture
def paid_since(db: str) -> str:
    """Four invoices of 1000.00 issued 10-01, due 10-11; on 11-10 all four are open, and
    payments dated 11-20 have since settled INV-000001 and INV-000002 and paid part of
    INV-000003; INV-000004 is never paid."""
    billcycle(db, "ingest", "-", stdin=jsonl(*(
        contract(cid, PLATFORM, payment_terms_days=10) for cid in ("ct_a", "ct_b", "ct_c",
                                                                    "ct_d"))))
    billcycle(db, "run", "--cycle-date", "2026-10-01")
    billcycle(db, "ingest", "-", stdin=jsonl(
        paid("pa", "INV-000001", "1000.00", "2026-11-20T09:00:00Z"),
        paid("pb-1", "INV-000002", "400.00", "2026-10-15T09:00:00Z"),
        paid("pb-2", "INV-000002", "600.00", "2026-11-20T09:00:00Z"),
        paid("pc", "INV-000003", "400.00", "2026-11-20T09:00:00Z")))
    return db


def considered(found: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """What collections chases or withholds, by invoice: (to collect, days overdue)."""
    return {a["number"]: (a["to_collect"], a["days_overdue"])
            for a in [*found["actions"], *found["withheld"], *(found.get("not_recorded") or ())]}


def aged_open(db: str, as_of: str) -> dict[str, tuple[str, int]]:
    """The invoices AR aging has open at the end of `as_of` with a collection step due."""
    return {i["number"]: (i["open"], i["days_past_due"])
            for currency in aging(db, as_of).values() for i in currency.get("items", ())
            if i["document_type"] == "invoice" and i["days_past_due"] >= FIRST_STEP}


def test_collections_as_of_a_past_day_reconciles_to_the_aging_of_that_day(
    paid_since: str
) -> None:
    # QA L4: as of 11-10 the invoices paid since were left out (INV-000001, INV-000002) or
    # stated with what they owe today (INV-000003: 600.00, not 1000.00), while AR aging as
    # of 11-10 has all four open.
    db = paid_since
    found = billcycle_json(db, "collections", "--as-of", "2026-11-10")
    assert considered(found) == aged_open(db, "2026-11-10") == {
        "INV-000001": ("1000.00", 30), "INV-000002": ("600.00", 30),
        "INV-000003": ("1000.00", 30), "INV-000004": ("1000.00", 30)}
    assert {a["outstanding"] for a in found["actions"] if a["number"] == "INV-000003"} == {
        "1000.00"}
    for as_of in ("2026-10-17", "2026-10-18", "2026-11-20", "2026-12-31"):
        assert considered(billcycle_json(db, "collections", "--as-of", as_of)) == \
            aged_open(db, as_of), as_of
    assert considered(billcycle_json(db, "collections", "--as-of", "2026-11-20")) == {
        "INV-000003": ("600.00", 40), "INV-000004": ("1000.00", 40)}


def test_recording_a_past_day_records_only_what_still_stands(
    paid_since: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded as of 11-10, a reminder would go to the customers who have paid since.
    db = paid_since
    monkeypatch.setenv(TODAY_ENV, "2026-11-30")
    found = billcycle_json(db, "collections", "--as-of", "2026-11-10", "--record")
    assert found["recorded"] == 3
    assert {a["number"] for a in found["actions"]} == {"INV-000004"}
    why = {a["number"]: a["why"] for a in found["not_recorded"]}
    assert why == {
        "INV-000001": "paid since 2026-11-10: nothing is open on it now",
        "INV-000002": "paid since 2026-11-10: nothing is open on it now",
        "INV-000003": "to collect 600.00 now, not 1000.00: payments, refunds or credit notes "
                      "dated after 2026-11-10",
    }
    assert len(found["not_recorded"]) == 9  # three steps each
    # As of 11-10 the recorded actions are sent; the others are still due then, not sent.
    again = billcycle_json(db, "collections", "--as-of", "2026-11-10")
    assert {a["number"] for a in again["actions"]} == {"INV-000001", "INV-000002", "INV-000003"}
    assert again["recorded"] is None and again["not_recorded"] is None

    # Recorded on 11-30, INV-000003's actions were not sent as of 11-10 and are listed as due
    # then; recording 11-10 again does not record them as sent on 11-10 too.
    later = billcycle_json(db, "collections", "--as-of", "2026-11-30", "--record")
    assert (later["recorded"], later["not_recorded"]) == (3, [])
    assert {a["number"] for a in later["actions"]} == {"INV-000003"}
    before = billcycle_json(db, "collections", "--as-of", "2026-11-10", "--record")
    assert before["recorded"] == 0 and before["actions"] == []
    assert {a["why"] for a in before["not_recorded"] if a["number"] == "INV-000003"} == {
        "recorded as sent after 2026-11-10"}
    text = billcycle(db, "collections", "--as-of", "2026-11-10", "--record").stdout
    assert ("not recorded, due on 2026-11-10 but changed since (`collections --as-of` a later "
            "day lists what is due now): reminder+7 on INV-000001 (paid since 2026-11-10") in text


def test_recording_a_day_still_to_come_is_refused(
    paid_since: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QA H3: `--as-of 2027-01-20 --record`, a typo for 2026-12-20, recorded every action due
    # by then as sent, and none of them was ever listed as due again.
    db = paid_since
    monkeypatch.setenv(TODAY_ENV, "2026-11-29")
    due = billcycle_json(db, "collections", "--as-of", "2026-12-20")["actions"]
    assert due
    refused = billcycle(db, "collections", "--as-of", "2027-01-20", "--record", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "billcycle: collections --record --as-of 2027-01-20: that day has not come (today is "
        "2026-11-29 UTC); record actions on the day they are sent, or list them without "
        "--record\n")
    assert billcycle_json(db, "collections", "--as-of", "2026-12-20")["actions"] == due
    # UTC's tomorrow is already today in a contract's timezone east of UTC: it may be recorded.
    assert billcycle(db, "collections", "--as-of", "2026-12-01", "--record",
                     check=False).returncode == 1
    tomorrow = billcycle_json(db, "collections", "--as-of", "2026-11-30", "--record")
    assert tomorrow["recorded"] == len(tomorrow["actions"]) > 0
    # Listing a later day is a forecast, not a record: never refused.
    assert billcycle_json(db, "collections", "--as-of", "2027-01-20")["recorded"] is None


def test_a_malformed_today_is_refused_by_name(
    paid_since: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TODAY_ENV, "29/11/2026")
    refused = billcycle(paid_since, "collections", "--as-of", "2026-11-10", "--record",
                        check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"billcycle: ${TODAY_ENV}: '29/11/2026' is not a date")
