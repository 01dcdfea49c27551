"""Invoices (with the payments applied to them) and the gapless invoice numbering."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.calendar import local_date
from domain.ledger import DocumentPayment, applied_by_date, posting_day
from domain.money import ZERO, format_money, round_money
from domain.usage import BILLCYCLE_NS

INVOICE_NUMBER_PREFIX = "INV-"


class PaymentRejected(ValueError):
    """A payment or refund that cannot be applied to the document it names (the reason names
    the document; ingest names the message)."""


def invoice_number(sequence: int) -> str:
    return f"{INVOICE_NUMBER_PREFIX}{sequence:06d}"


def invoice_sequence(number: str) -> int:
    """The place of an invoice number in the one sequence (`invoice_number`'s inverse)."""
    return int(number.removeprefix(INVOICE_NUMBER_PREFIX))


def invoice_aggregate_id(number: str) -> UUID:
    return uuid5(BILLCYCLE_NS, f"invoice:{number}")


class Invoice(Aggregate):
    """An issued invoice or credit note; its id follows from its number."""

    @staticmethod
    def create_id(number: str) -> UUID:
        return invoice_aggregate_id(number)

    @event("InvoiceIssued")
    def __init__(
        self,
        number: str,
        batch_id: str,
        cycle_date: date,
        contract_id: str,
        customer_id: str,
        currency: str,
        issue_date: date,
        due_date: date,
        document_type: str,
        lines: list[dict[str, Any]],
        subtotals: dict[str, Decimal],
        total: Decimal,
        contract_version: int,
    ) -> None:
        self.number = number
        self.batch_id = batch_id
        self.cycle_date = cycle_date
        self.contract_id = contract_id
        self.customer_id = customer_id
        self.currency = currency
        self.issue_date = issue_date
        self.due_date = due_date
        self.document_type = document_type
        self.lines = lines
        self.subtotals = subtotals
        self.total = total
        self.contract_version = contract_version
        self.payments: dict[str, Decimal] = {}
        self.received_at: dict[str, datetime] = {}
        self.refunds: dict[str, Decimal] = {}
        self.refunded_at: dict[str, datetime] = {}

    @classmethod
    def issued(
        cls,
        number: str,
        batch_id: str,
        cycle_date: date,
        contract_id: str,
        customer_id: str,
        currency: str,
        issue_date: date,
        due_date: date,
        document_type: str,
        lines: list[dict[str, Any]],
        subtotals: dict[str, Decimal],
        total: Decimal,
        contract_version: int,
    ) -> Any:
        """The `InvoiceIssued` event alone, as `Invoice(...)` would record it, without building
        the aggregate: a billing run only stores the event. `event.mutate(None)` is the
        invoice."""
        return cls.InvoiceIssued(  # type: ignore[attr-defined]
            originator_topic=_INVOICE_TOPIC,
            originator_id=invoice_aggregate_id(number),
            originator_version=cls.INITIAL_VERSION,
            timestamp=cls.InvoiceIssued.create_timestamp(),  # type: ignore[attr-defined]
            number=number,
            batch_id=batch_id,
            cycle_date=cycle_date,
            contract_id=contract_id,
            customer_id=customer_id,
            currency=currency,
            issue_date=issue_date,
            due_date=due_date,
            document_type=document_type,
            lines=lines,
            subtotals=subtotals,
            total=total,
            contract_version=contract_version,
        )

    @property
    def paid(self) -> Decimal:
        return sum(self.payments.values(), ZERO)

    @property
    def refunded(self) -> Decimal:
        return sum(self.refunds.values(), ZERO)

    @property
    def balance(self) -> Decimal:
        """What the customer owes on it (negative: what it holds for them)."""
        return self.total - self.paid + self.refunded

    def pay_refund(self, refund_id: str, amount: Decimal, currency: str, paid_at: datetime,
                   timezone: str = "UTC") -> None:
        """Pay back (once per refund id) what the document holds for its customer by the
        refund's day in the contract's `timezone`: a credit note's amount and the payments
        beyond what it owed, dated by then (as the ledger dates them), less the refunds dated
        by then. Refunds dated later must still be covered on their days, so that what is
        held never goes below zero, whatever order refunds arrive in."""
        self._in_currency("refund", currency, self.number)
        if refund_id in self.refunds:
            return
        day = self._day(paid_at, timezone)
        later = {d for d in (self._day(t, timezone) for t in self.refunded_at.values())
                 if d > day}
        excess = self._excess_by_date(timezone)
        for on in [day, *sorted(later)]:
            held = self._held_by(on, timezone, excess) - self._refunded_by(on, timezone)
            if round_money(amount, self.currency) > held:
                before = "" if on == day else f" (a refund dated {on} needs the rest)"
                raise PaymentRejected(
                    f"{format_money(amount, self.currency)} {self.currency} is more than "
                    f"{self.number} holds for {self.customer_id} on {on} "
                    f"({format_money(max(held, ZERO), self.currency)} {self.currency}: "
                    f"{'its credit and ' if self.total < 0 else ''}what was paid beyond what "
                    f"it owed, less refunds dated by then){before}; check the document "
                    "number, the amount and the date")
        self._refund_paid(refund_id=refund_id, amount=amount, currency=currency,
                          paid_at=paid_at)

    def _in_currency(self, cash: str, currency: str, document: str) -> None:
        """Refuse a payment or refund (`cash`) in another currency than the document's (the
        message's type and id are said before this, by ingest)."""
        if currency != self.currency:
            raise PaymentRejected(
                f"currency {currency} does not match {document} in {self.currency}; send the "
                f"{cash} in {self.currency}")

    def _day(self, instant: datetime, timezone: str) -> date:
        """The day money moved, as the ledger dates it: received or paid, or the issue date
        if earlier."""
        return posting_day(instant, timezone, self.issue_date)

    def _held_by(self, day: date, timezone: str, excess: dict[str, Decimal]) -> Decimal:
        """What the document holds for its customer at the end of `day`: a credit note's
        amount, and the `excess` (`_excess_by_date`) of the payments dated by then."""
        return max(-self.total, ZERO) + sum(
            (part for pid, part in excess.items()
             if self._day(self.received_at[pid], timezone) <= day), ZERO)

    def _refunded_by(self, day: date, timezone: str) -> Decimal:
        return sum((round_money(paid, self.currency) for rid, paid in self.refunds.items()
                    if self._day(self.refunded_at[rid], timezone) <= day), ZERO)

    @event("RefundPaid")
    def _refund_paid(self, refund_id: str, amount: Decimal, currency: str,
                     paid_at: datetime) -> None:
        self.refunds[refund_id] = amount
        self.refunded_at[refund_id] = paid_at

    def apply_payment(
        self, payment_id: str, amount: Decimal, currency: str, received_at: datetime,
        timezone: str = "UTC",
    ) -> str | None:
        """Apply the payment (once per payment id); a note when it leaves customer credit: the
        payments settle the document in the order of their days in the contract's `timezone`,
        as the ledger applies them (domain/ledger.py), so the credit may be another's part."""
        self._in_currency("payment", currency, f"invoice {self.number}")
        if payment_id in self.payments:
            return None
        owed = self.open_amount()
        before = self._excess_by_date(timezone)
        self._payment_applied(
            payment_id=payment_id, amount=amount, currency=currency, received_at=received_at
        )
        grown = {pid: excess - before.get(pid, ZERO)
                 for pid, excess in self._excess_by_date(timezone).items()
                 if excess > before.get(pid, ZERO)}
        if not grown:
            return None
        if list(grown) == [payment_id]:
            return overpayment_note(self.number, payment_id, amount, owed, grown[payment_id],
                                    currency)
        return settled_first_note(self.number, payment_id, amount,
                                  local_date(received_at, timezone), grown, currency)

    def _excess_by_date(self, timezone: str) -> dict[str, Decimal]:
        """Each payment's part beyond what the document owed, the payments taken in the order
        of their days (the ledger's: received, or the issue date if received earlier)."""
        payments = self.payments_as_posted(timezone)
        applied = applied_by_date(self.total, payments)
        return {p.payment_id: p.amount - applied[p.payment_id] for p in payments}

    def payments_as_posted(self, timezone: str) -> list[DocumentPayment]:
        """The payments as the ledger takes them (domain/ledger.py: applied_by_date): rounded
        to minor units, on their day in the contract's `timezone`, in the order they were
        applied (the log's), their parts not yet computed."""
        return self._as_posted(self.payments, self.received_at, timezone)

    def refunds_as_posted(self, timezone: str) -> list[DocumentPayment]:
        """The refunds as the ledger takes them, like `payments_as_posted`."""
        return self._as_posted(self.refunds, self.refunded_at, timezone)

    def _as_posted(self, amounts: dict[str, Decimal], instants: dict[str, datetime],
                   timezone: str) -> list[DocumentPayment]:
        return [
            DocumentPayment(cid, self._day(instants[cid], timezone), position,
                            round_money(amount, self.currency), ZERO)
            for position, (cid, amount) in enumerate(amounts.items())
        ]

    def open_amount(self) -> Decimal:
        """What the document still owes, in the ledger's terms (payments rounded half-up to
        the currency's minor units); never below zero: a credit note owes nothing."""
        paid = sum((round_money(p, self.currency) for p in self.payments.values()), ZERO)
        return max(self.total - paid, ZERO)

    @event("PaymentApplied")
    def _payment_applied(
        self, payment_id: str, amount: Decimal, currency: str, received_at: datetime
    ) -> None:
        self.payments[payment_id] = amount
        self.received_at[payment_id] = received_at


def overpayment_note(number: str, payment_id: str, amount: Decimal, owed: Decimal,
                     beyond: Decimal, currency: str) -> str:
    """What an operator is told of a payment beyond what its document owed."""
    owes = (f"which still owed {format_money(owed, currency)} {currency}" if owed > 0
            else "which owed nothing")
    return (f"payment {payment_id} of {amount} {currency} on {number}, {owes}: "
            f"{format_money(beyond, currency)} {currency} is held as the customer's credit; "
            "check the invoice number and the amount")


def settled_first_note(number: str, payment_id: str, amount: Decimal, day: date,
                       held: dict[str, Decimal], currency: str) -> str:
    """What an operator is told of a payment dated before payments already applied, which
    settles the document first and leaves (some of) theirs as customer credit."""
    parts = ", ".join(f"{format_money(part, currency)} {currency} of payment {pid}"
                      for pid, part in held.items())
    return (f"payment {payment_id} of {amount} {currency} on {number}, dated {day}, settles "
            f"it before the payments dated later; held as the customer's credit now: {parts}; "
            "check the invoice number and the amount")


_INVOICE_TOPIC = get_topic(Invoice)

INVOICE_NUMBERS_ID = uuid5(BILLCYCLE_NS, "invoice-numbers")


class InvoiceNumbers(Aggregate):
    """The one sequence of invoice numbers. Saved with the invoices it numbers, so no gaps."""

    @staticmethod
    def create_id() -> UUID:
        return INVOICE_NUMBERS_ID

    @event("Started")
    def __init__(self) -> None:
        self.issued = 0

    def allocate(self, count: int, batch_id: str) -> list[str]:
        first = self.issued + 1
        self._allocated(first=first, count=count, batch_id=batch_id)
        return [invoice_number(first + i) for i in range(count)]

    @event("Allocated")
    def _allocated(self, first: int, count: int, batch_id: str) -> None:
        self.issued = first + count - 1
