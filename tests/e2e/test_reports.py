"""The read side through the CLI: reports, the Beancount export checked by bean-check, explain,
collections, replay and batch verification, on the embedded store and on PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beancount.core import data

from domain.application import BillingApplication
from domain.billing_runs import BillingRuns
from infra import sample_book
from infra.cli import TODAY_ENV
from infra.store.url import store_env
from tests.e2e.cli import billcycle, billcycle_json, jsonl

CYCLE = sample_book.DEFAULT_CYCLE_DATE
PREVIOUS = sample_book.previous_cycle_date(CYCLE)
BUCKETS = {"current", "1-30", "31-60", "61-90", "90+", "total"}
BEAN_CHECK = str(Path(sys.executable).with_name("bean-check"))
BILLCYCLE = str(Path(sys.executable).with_name("billcycle"))


def ingest(db: str, tmp_path: Path, name: str, lines: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(lines)
    billcycle(db, "ingest", str(path))


def pay(invoices: list[dict[str, Any]], day: date) -> bytes:
    """Pay every other invoice in full, one in part and one twice over."""
    messages: list[dict[str, Any]] = []
    for n, inv in enumerate(i for i in invoices if Decimal(i["total"]) > 0):
        share = Decimal(1) if n % 2 == 0 else Decimal("0.5") if n % 3 == 1 else Decimal(0)
        if n == 5:
            share = Decimal(2)
        if share:
            amount = Decimal(inv["total"]) * share
            messages.append({"type": "payment.received", "id": f"pay-{inv['number']}",
                             "occurred_at": f"{day}T09:00:00Z",
                             "invoice_number": inv["number"], "amount": str(amount),
                             "currency": inv["currency"]})
    return jsonl(*messages)


@pytest.fixture
def billed(db: str, tmp_path: Path) -> list[str]:
    """The sample book over two cycles, with payments: the batch ids."""
    def book(part: sample_book.Part) -> bytes:
        return b"".join(sample_book.generate(contracts=40, events=6, part=part))

    ingest(db, tmp_path, "before.jsonl", book("before"))
    batches = [billcycle_json(db, "run", "--cycle-date", str(PREVIOUS))["batch_id"]]
    ingest(db, tmp_path, "pay.jsonl", pay(billcycle_json(db, "invoices"), PREVIOUS))
    ingest(db, tmp_path, "after.jsonl", book("after"))
    batches.append(billcycle_json(db, "run", "--cycle-date", str(CYCLE))["batch_id"])
    return batches


def beancount_balances(path: Path, as_of: date) -> dict[tuple[str, str], Decimal]:
    entries, errors, _ = loader.load_file(str(path))
    assert not errors, errors
    totals: dict[tuple[str, str], Decimal] = {}
    for entry in entries:
        if isinstance(entry, data.Transaction) and entry.date <= as_of:
            for p in entry.postings:
                assert p.units is not None and p.units.number is not None
                key = (p.account, p.units.currency)
                totals[key] = totals.get(key, Decimal(0)) + p.units.number
    return totals


def test_reports_agree_with_the_beancount_ledger_and_survive_replay(
    db: str, billed: list[str], tmp_path: Path
) -> None:
    for as_of in (PREVIOUS + timedelta(days=12), CYCLE + timedelta(days=50)):
        check_against_beancount(db, as_of, tmp_path)
    late = str(CYCLE + timedelta(days=50))  # one invoice was paid twice over by then
    assert any("customer_credit" in b for b in billcycle_json(
        db, "report", "ar-aging", "--as-of", late).values())
    assert "customer credit held" in billcycle(db, "report", "ar-aging", "--as-of", late).stdout
    args = ("report", "revenue", "--as-of", str(CYCLE + timedelta(days=10)))
    before = billcycle_json(db, *args)
    replayed = billcycle_json(db, "replay")
    assert set(replayed["projections"]) == {"ledger", "revenue", "audit", "collections"}
    single = billcycle_json(db, "replay", "--projection", "ledger")
    assert set(single["projections"]) == {"ledger"}
    assert billcycle_json(db, *args) == before


def check_against_beancount(db: str, as_of: date, tmp_path: Path) -> None:
    aging = billcycle_json(db, "report", "ar-aging", "--as-of", str(as_of))
    revenue = billcycle_json(db, "report", "revenue", "--as-of", str(as_of))
    path = tmp_path / f"ledger-{as_of}.beancount"
    billcycle(db, "export", "beancount", "--as-of", str(as_of), "-o", str(path))
    check = subprocess.run([BEAN_CHECK, str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    balances = beancount_balances(path, as_of)
    assert aging and revenue
    for currency, buckets in aging.items():
        assert set(buckets) - {"customer_credit"} == BUCKETS
        assert sum(Decimal(buckets[b]) for b in BUCKETS - {"total"}) == Decimal(buckets["total"])
        assert balances.get(("Assets:Receivable", currency), 0) == Decimal(buckets["total"])
        # Beside the buckets, not in them: what is owed to customers.
        credit = -balances.get(("Liabilities:CustomerCredit", currency), Decimal(0))
        assert Decimal(buckets.get("customer_credit", "0")) == credit
    for currency, r in revenue.items():
        billed_, recognized, deferred = (Decimal(r[k]) for k in
                                         ("billed", "recognized", "deferred"))
        assert billed_ == recognized + deferred
        assert -balances.get(("Income:Revenue", currency), 0) == recognized
        assert -balances.get(("Liabilities:DeferredRevenue", currency), 0) == deferred


def test_every_batch_verifies_and_explain_says_why(db: str, billed: list[str]) -> None:
    for batch_id in billed:
        result = billcycle_json(db, "batch", "verify", batch_id)
        assert result["identical"] and result["invoices"] > 0, result["differences"]
    listed = billcycle_json(db, "batch", "list")
    assert [b["batch_id"] for b in listed] == billed
    explained = billcycle_json(db, "explain", "INV-000001")
    assert explained["invoice"]["number"] == "INV-000001"
    assert explained["batch"]["batch_id"] == billed[0]
    assert all(line["explanation"] for line in explained["lines"])
    assert "priced with the terms effective" in billcycle(db, "explain", "INV-000001").stdout
    missing = script(db, "explain", "INV-999999")
    assert missing.returncode == 1 and "no invoice INV-999999" in missing.stderr


def test_every_usage_line_lists_the_usage_events_that_make_its_quantity(
    db: str, billed: list[str]
) -> None:
    # qa14 M4: over the generated book (late usage, amendments, terminations, shared
    # metrics), every usage line's events aggregate to its quantity, and what a line deducts
    # as already billed is what the earlier invoices it names billed.
    traced = deducted = 0
    for invoice in billcycle_json(db, "invoices"):
        for line in billcycle_json(db, "explain", invoice["number"], "--usage")["lines"]:
            if "counted_usage" in line:
                u, traced = line["counted_usage"], traced + 1
                assert u["agrees"], (invoice["number"], line["line"], u)
                assert len(u["events"]) == line["basis"]["events"]
            if "billed_before" in line:
                deducted += 1
                assert sum(Decimal(b["amount"]) for b in line["billed_before"]) == Decimal(
                    line["basis"]["already_billed"]), (invoice["number"], line["line"])
    assert traced


def script(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as an operator runs it (exit codes and stderr)."""
    return subprocess.run([BILLCYCLE, "--db", db, *args], capture_output=True, text=True,
                          timeout=300)


def test_collections_are_recorded_once_and_a_tampered_invoice_fails_verification(
    db: str, billed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.startswith("sqlite"):
        pytest.skip("the same code on both stores; the integration tests cover PostgreSQL")
    as_of = str(CYCLE + timedelta(days=60))
    monkeypatch.setenv(TODAY_ENV, as_of)  # recorded as sent on the day they are sent
    due = billcycle_json(db, "collections", "--as-of", as_of)["actions"]
    paid_in_full = {i["number"] for i in billcycle_json(db, "invoices")
                    if Decimal(i["balance"]) <= 0}
    assert due and not {a["number"] for a in due} & paid_in_full
    recorded = billcycle_json(db, "collections", "--as-of", as_of, "--record")
    assert recorded["recorded"] == len(due)
    assert billcycle_json(db, "collections", "--as-of", as_of)["actions"] == []
    assert billcycle_json(db, "collections", "--as-of", as_of, "--record")["recorded"] == 0
    tamper_with_the_last_invoice(db)
    result = script(db, "--json", "batch", "verify", billed[-1])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "1 difference between" in result.stderr
    differences = json.loads(result.stdout)["differences"]
    assert any(d["what"] == "lines[0].amount" for d in differences)




def tamper_with_the_last_invoice(db: str) -> None:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as store:
        rowid, state = store.execute(
            "SELECT rowid, state FROM stored_events WHERE topic LIKE '%Invoice.InvoiceIssued'"
            " ORDER BY rowid DESC LIMIT 1").fetchone()
        issued = json.loads(state)
        issued["lines"][0]["amount"] = str(Decimal(issued["lines"][0]["amount"]) + 1)
        store.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                      (json.dumps(issued, separators=(",", ":")).encode(), rowid))


class Interrupted(Exception):
    """The run killed after its first chunk."""


def test_verify_of_an_interrupted_batch_says_it_never_finished(tmp_path: Path) -> None:
    # QA12 F4: verify of a batch whose run was killed said "all identical" and nothing else.
    db = f"sqlite:///{tmp_path / 'store.db'}"
    ingest(db, tmp_path, "before.jsonl", b"".join(
        sample_book.generate(contracts=20, events=2, part="before")))

    def killed(done: int, total: int) -> None:
        raise Interrupted

    app = BillingApplication(env=store_env(db))
    try:
        with pytest.raises(Interrupted):
            BillingRuns(app, lambda: datetime.now(UTC), chunk_size=5).run(
                PREVIOUS, batch_id="nov", progress=killed)
    finally:
        app.close()
    result = billcycle_json(db, "batch", "verify", "nov")
    assert result["identical"] and not result["finished"], result
    assert (result["contracts"], result["last_attempt"]) == (5, "run")
    said = billcycle(db, "batch", "verify", "nov").stdout  # exit 0: nothing differs
    assert "(cycle date 2026-11-01, unfinished)" in said and "all identical" in said
    assert "the batch never finished" in said, said
    assert f"billcycle run --cycle-date {PREVIOUS} --batch-id nov" in said
    billcycle(db, "run", "--cycle-date", str(PREVIOUS), "--batch-id", "nov")
    result = billcycle_json(db, "batch", "verify", "nov")
    assert result["identical"] and result["finished"] and result["attempts"] == 2
    assert "never finished" not in billcycle(db, "batch", "verify", "nov").stdout


def test_every_batch_of_the_demo_verifies(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    billcycle(db, "demo", "--contracts", "60", "--db", db)
    batches = billcycle_json(db, "batch", "list")
    assert len(batches) == 3  # the previous cycle, the cycle, and the cycle run again
    for batch in batches:
        result = billcycle_json(db, "batch", "verify", batch["batch_id"])
        assert result["identical"], result["differences"]
        assert result["contracts"] > 0
