"""A customer's open credit notes settle its open invoices in the same currency, the oldest due
first (domain/ledger.py: credit_notes_applied), as AR aging and dunning read them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.ledger import Receivable, credit_notes_applied


def doc(number: str, open_: int, due: str, customer: str = "cus_1", currency: str = "USD",
        issued: str = "2026-10-01") -> Receivable:
    return Receivable(number, customer, currency, issued, due, open_)


def test_a_credit_note_settles_the_oldest_due_invoice_first() -> None:
    applied = credit_notes_applied([
        doc("INV-000003", 50_00, "2026-12-01"),
        doc("INV-000001", 30_00, "2026-10-31"),
        doc("INV-000004", -60_00, "2026-12-31", issued="2026-12-01"),
    ])
    assert applied == {"INV-000001": 30_00, "INV-000003": 30_00, "INV-000004": -60_00}


def test_credit_beyond_the_open_invoices_stays_open_on_the_credit_note() -> None:
    applied = credit_notes_applied([
        doc("INV-000001", 30_00, "2026-10-31"),
        doc("INV-000002", -20_00, "2026-11-30", issued="2026-11-01"),
        doc("INV-000003", -20_00, "2026-12-31", issued="2026-12-01"),
    ])
    # The older credit note is used first; the later one keeps 10.00 open.
    assert applied == {"INV-000001": 30_00, "INV-000002": -20_00, "INV-000003": -10_00}


def test_ties_go_by_issue_date_then_by_number() -> None:
    # QA9 F5 (docs/accounting.md, AR aging): three invoices due on one day, two credit notes
    # issued on one day, given in no particular order.
    applied = credit_notes_applied([
        doc("INV-000030", -100_00, "2027-01-30", issued="2026-12-31"),
        doc("INV-000024", 100_00, "2026-12-31", issued="2026-12-01"),
        doc("INV-000023", 100_00, "2026-12-31", issued="2026-12-01"),
        doc("INV-000029", -150_00, "2027-01-30", issued="2026-12-31"),
        doc("INV-000022", 100_00, "2026-12-31", issued="2026-12-01"),
        # Due the same day, issued earlier (a run for an earlier cycle date, run later).
        doc("INV-000025", 100_00, "2026-12-31", issued="2026-11-15"),
    ])
    assert applied == {"INV-000025": 100_00, "INV-000022": 100_00, "INV-000023": 50_00,
                       "INV-000029": -150_00, "INV-000030": -100_00}


def test_credit_notes_settle_only_their_own_customers_invoices_in_their_currency() -> None:
    assert credit_notes_applied([
        doc("INV-000001", 30_00, "2026-10-31", customer="cus_2"),
        doc("INV-000002", 30_00, "2026-10-31", currency="EUR"),
        doc("INV-000003", -20_00, "2026-12-31"),
    ]) == {}


RECEIVABLES = st.lists(st.builds(
    doc,
    number=st.integers(min_value=1, max_value=999_999).map(lambda n: f"INV-{n:06d}"),
    open_=st.integers(min_value=-100_000, max_value=100_000),
    due=st.dates().map(lambda d: d.isoformat()),
    customer=st.sampled_from(["cus_1", "cus_2"]),
    currency=st.sampled_from(["USD", "JPY"]),
    issued=st.dates().map(lambda d: d.isoformat()),
), max_size=12, unique_by=lambda r: r.number)


@given(RECEIVABLES)
def test_credit_notes_only_move_amounts_within_a_customers_receivable(
    receivables: list[Receivable],
) -> None:
    applied = credit_notes_applied(receivables)
    after: dict[tuple[str, str], list[int]] = {}
    for r in receivables:
        part = applied.get(r.number, 0)
        # An invoice is settled at most to zero, a credit note used at most to zero.
        assert 0 <= part <= r.open if r.open >= 0 else r.open <= part <= 0
        after.setdefault((r.customer_id, r.currency), []).append(r.open - part)
    for key, amounts in after.items():
        # Nothing is created or lost: the customer's open total in the currency is the same.
        assert sum(amounts) == sum(r.open for r in receivables
                                   if (r.customer_id, r.currency) == key)
        # Open invoices and open credit notes of one customer and currency never remain both.
        assert not (any(a > 0 for a in amounts) and any(a < 0 for a in amounts))
