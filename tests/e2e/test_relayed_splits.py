"""An accounting system fed only by billing.invoices posts what billcycle's ledger posts (QA9
F3): each payment's part settling its document and its part to customer credit, each refund's
part from a credit note and from customer credit, and the reapplications when money dated
earlier arrives later, as `payment.applied` and `refund.applied` state them."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract
from tests.e2e.test_payments_by_date import aging, november_credited, paid
from tests.e2e.test_refunds import refund, relayed

RECEIVABLE, CREDIT = "Assets:Receivable", "Liabilities:CustomerCredit"

# (day, document, currency, account) -> amount, debits positive, as in the Beancount export.
Book = dict[tuple[str, str, str, str], Decimal]


def post_relayed(messages: list[dict[str, Any]]) -> Book:
    """The receivable and customer credit postings of a downstream that reads the messages
    alone, as docs/kafka.md tells it to post them."""
    book: Book = defaultdict(Decimal)
    parts: dict[tuple[str, str], Decimal] = {}  # (document, payment or refund) -> receivable

    def post(day: str, m: dict[str, Any], receivable: Decimal, credit: Decimal) -> None:
        book[(day, m["number"], m["currency"], RECEIVABLE)] += receivable
        book[(day, m["number"], m["currency"], CREDIT)] += credit

    for m in messages:
        if m["type"] in ("invoice.issued", "credit_note.issued"):
            post(m["issue_date"], m, Decimal(m["total"]), Decimal(0))
        elif m["type"] == "payment.applied":
            post(m["posted_on"], m, -Decimal(m["to_receivable"]),
                 -Decimal(m["to_customer_credit"]))
            parts[(m["number"], m["payment_id"])] = Decimal(m["to_receivable"])
            for p in m["reapplied"]:
                key = (m["number"], p["payment_id"])
                change = Decimal(p["to_receivable"]) - parts[key]
                post(p["posted_on"], m, -change, change)
                parts[key] = Decimal(p["to_receivable"])
        elif m["type"] == "refund.applied":
            post(m["posted_on"], m, Decimal(m["from_receivable"]),
                 Decimal(m["from_customer_credit"]))
            parts[(m["number"], m["refund_id"])] = Decimal(m["from_receivable"])
            for r in m["reapplied"]:
                key = (m["number"], r["refund_id"])
                change = Decimal(r["from_receivable"]) - parts[key]
                post(r["posted_on"], m, change, -change)
                parts[key] = Decimal(r["from_receivable"])
    return {k: v for k, v in book.items() if v}


def ledger_postings(db: str) -> Book:
    """The receivable and customer credit postings of billcycle's own journal."""
    book: Book = defaultdict(Decimal)
    day = document = ""
    for line in billcycle(db, "export", "beancount").stdout.splitlines():
        if line[:1].isdigit() and " * " in line:
            day = line.split()[0]
        elif line.startswith("  document: "):
            document = line.split('"')[1]
        elif line.startswith(("  " + RECEIVABLE, "  " + CREDIT)):
            account, amount, currency = line.split()
            book[(day, document, currency, account)] += Decimal(amount)
    return {k: v for k, v in book.items() if v}


def balances(book: Book, as_of: str) -> dict[str, dict[str, Decimal]]:
    """Per currency, the receivable and the customer credit held at the end of `as_of`."""
    found: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for (day, _, currency, account), amount in book.items():
        if day <= as_of:
            found[currency][account] += amount
    return found


def cash_arriving_out_of_date_order(db: str) -> list[dict[str, Any]]:
    """Payments and refunds that each arrive after money dated later on the same document; the
    messages relayed, in log order."""
    november_credited(db)  # INV-000001 Oct, INV-000002 Nov, INV-000003 credit note -1000.00
    billcycle(db, "ingest", "-", stdin=jsonl(contract(
        "ct_j", {**PLATFORM, "amount": "100000"}, currency="JPY", timezone="Asia/Tokyo",
        start_date="2026-12-01")))
    billcycle(db, "run", "--cycle-date", "2026-12-01")  # INV-000004, 100000 JPY
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        # October's invoice of 1000.00: the latest-dated payment first, the earliest last.
        paid("p-late", "INV-000001", "700.00", "2026-10-20T09:00:00Z"),
        paid("p-mid", "INV-000001", "400.00", "2026-10-10T09:00:00Z"),
        paid("p-early", "INV-000001", "100.00", "2026-10-05T09:00:00Z"),
        refund("r-over", "INV-000001", "150.00", "2026-10-25T09:00:00Z"),  # of the 200.00 over
        # The credit note: 200.00 paid on it (customer credit), refunds out of date order.
        paid("p-cn", "INV-000003", "200.00", "2026-11-20T09:00:00Z"),
        refund("r-late", "INV-000003", "1100.00", "2026-11-28T09:00:00Z"),
        refund("r-early", "INV-000003", "100.00", "2026-11-18T09:00:00Z"),
        # Tokyo: pj-early is 12-09 there (23:00), pj-late 12-10; both 12-09 in UTC.
        paid("pj-late", "INV-000004", "100000", "2026-12-09T16:30:00Z", "JPY"),
        paid("pj-early", "INV-000004", "100000", "2026-12-09T14:00:00Z", "JPY")))
    assert (ingested["accepted"], ingested["rejected"]) == (9, [])
    return relayed(db)


def test_the_relayed_messages_post_what_the_ledger_posts(db: str) -> None:
    messages = cash_arriving_out_of_date_order(db)

    downstream = post_relayed(messages)

    assert downstream == ledger_postings(db)
    days = sorted({day for day, *_ in downstream} | {"2026-10-04", "2026-12-31"})
    for day in days:  # and AR aging agrees on every day anything was posted
        report, posted = aging(db, day), balances(downstream, day)
        for currency in report.keys() | posted.keys():
            said = report.get(currency, {})
            assert (Decimal(said.get("total", 0)), Decimal(said.get("customer_credit", 0))) == (
                posted[currency][RECEIVABLE], -posted[currency][CREDIT]), (day, currency)


def test_a_payment_or_refund_dated_earlier_says_which_it_reapplies(db: str) -> None:
    messages = cash_arriving_out_of_date_order(db)

    said = {m.get("payment_id") or m["refund_id"]: m for m in messages
            if m["type"] in ("payment.applied", "refund.applied")}
    split = {cid: (m.get("to_receivable", m.get("from_receivable")),
                   m.get("to_customer_credit", m.get("from_customer_credit")), m["reapplied"])
             for cid, m in said.items()}
    assert split == {
        "p-late": ("700.00", "0.00", []),
        "p-mid": ("400.00", "0.00", [  # dated first, it settles first: p-late gives way
            {"payment_id": "p-late", "posted_on": "2026-10-20", "to_receivable": "600.00",
             "to_customer_credit": "100.00"}]),
        "p-early": ("100.00", "0.00", [
            {"payment_id": "p-late", "posted_on": "2026-10-20", "to_receivable": "500.00",
             "to_customer_credit": "200.00"}]),
        "r-over": ("0.00", "150.00", []),  # an invoice's refund is of customer credit
        "p-cn": ("0.00", "200.00", []),  # a credit note owes nothing
        "r-late": ("1000.00", "100.00", []),
        "r-early": ("100.00", "0.00", [
            {"refund_id": "r-late", "posted_on": "2026-11-28", "from_receivable": "900.00",
             "from_customer_credit": "200.00"}]),
        "pj-late": ("100000", "0", []),
        "pj-early": ("100000", "0", [
            {"payment_id": "pj-late", "posted_on": "2026-12-10", "to_receivable": "0",
             "to_customer_credit": "100000"}]),
    }
