"""Invoices (with the payments applied to them) and the gapless invoice numbering."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from domain.money import ZERO, format_money, round_money
from domain.usage import BILLCYCLE_NS

INVOICE_NUMBER_PREFIX = "INV-"


class PaymentRejected(ValueError):
    """A payment that cannot be applied to the invoice it names."""


def invoice_number(sequence: int) -> str:
    return f"{INVOICE_NUMBER_PREFIX}{sequence:06d}"


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
    def balance(self) -> Decimal:
        return self.total - self.paid

    def apply_payment(
        self, payment_id: str, amount: Decimal, currency: str, received_at: datetime
    ) -> str | None:
        """Apply the payment (once per payment id); a note when it pays more than the
        document still owes, the excess being customer credit (docs/accounting.md)."""
        if currency != self.currency:
            raise PaymentRejected(
                f"payment {payment_id}: currency {currency} does not match invoice "
                f"{self.number} in {self.currency}; send the payment in {self.currency}"
            )
        if payment_id in self.payments:
            return None
        owed = self.open_amount()
        self._payment_applied(
            payment_id=payment_id, amount=amount, currency=currency, received_at=received_at
        )
        beyond = round_money(amount, currency) - owed
        if beyond <= 0:
            return None
        return overpayment_note(self.number, payment_id, amount, owed, beyond, currency)

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


def overpayment_note(number: str, payment_id: str, amount: Decimal, owed: Decimal,
                     beyond: Decimal, currency: str) -> str:
    """What an operator is told of a payment beyond what its document owed."""
    owes = (f"which still owed {format_money(owed, currency)} {currency}" if owed > 0
            else "which owed nothing")
    return (f"payment {payment_id} of {amount} {currency} on {number}, {owes}: "
            f"{format_money(beyond, currency)} {currency} is held as the customer's credit; "
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
