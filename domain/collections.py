"""Collections (dunning): reminders and a final notice at set days after an invoice's due date.

Issuing an invoice starts its collection with the schedule of the policy in force (and the
payments already applied to the invoice by then, when the collection starts after them);
payments reduce what is outstanding and the payment that settles the invoice ends the
collection. Payments and refunds are noted after the end too, so that what is outstanding
is always the invoice's balance after what was noted. Each
action is recorded once, when someone (`billcycle collections --record`) sends it. The
collection is an aggregate of its own (id from the invoice number), so its events are in the
log beside the invoice's and reach the same downstream consumers. Pure: dates are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.money import ZERO
from domain.usage import BILLCYCLE_NS


class ActionKind(StrEnum):
    REMINDER = "reminder"
    FINAL_NOTICE = "final_notice"


@dataclass(frozen=True, order=True)
class Step:
    """One action of a collection schedule, `days` after the due date."""

    days: int
    kind: ActionKind

    @property
    def step_id(self) -> str:
        return f"{self.kind.value}+{self.days}"


class InvalidPolicy(ValueError):
    """A collection schedule that cannot be used as written."""


@dataclass(frozen=True)
class CollectionPolicy:
    """The actions every new collection schedules; by default reminders at +7 and +14 days
    and a final notice at +30 days after the due date."""

    steps: tuple[Step, ...] = (
        Step(7, ActionKind.REMINDER),
        Step(14, ActionKind.REMINDER),
        Step(30, ActionKind.FINAL_NOTICE),
    )

    @classmethod
    def parse(cls, text: str) -> CollectionPolicy:
        """A policy from `KIND:DAYS,...`, e.g. `reminder:7,reminder:14,final_notice:30`."""
        steps = []
        for item in (part.strip() for part in text.split(",")):
            kind, _, days = item.partition(":")
            try:
                steps.append(Step(int(days), ActionKind(kind.strip())))
            except ValueError:
                raise InvalidPolicy(
                    f"collection step {item!r} is not KIND:DAYS with KIND one of "
                    f"{', '.join(k.value for k in ActionKind)}; e.g. reminder:7,final_notice:30"
                ) from None
        if len({s.step_id for s in steps}) != len(steps):
            raise InvalidPolicy(f"collection schedule {text!r} repeats a step; list each once")
        return cls(tuple(sorted(steps)))

    def text(self) -> str:
        """The policy as parse() reads it."""
        return ",".join(f"{s.kind.value}:{s.days}" for s in self.steps)

    def schedule(self, due_date: date) -> list[dict[str, str]]:
        """The actions of a collection for an invoice due on `due_date`, in date order."""
        return [
            {"step": s.step_id, "kind": s.kind.value,
             "due_on": (due_date + timedelta(days=s.days)).isoformat()}
            for s in self.steps
        ]


def collection_id(invoice_number: str) -> UUID:
    return uuid5(BILLCYCLE_NS, f"collection:{invoice_number}")


@dataclass(frozen=True)
class Payment:
    """A payment applied to the invoice."""

    payment_id: str
    amount: Decimal
    received_at: datetime


class UnknownStep(ValueError):
    """An action that is not on the collection's schedule."""


class Collection(Aggregate):
    """The collection of one invoice: its schedule, what is outstanding, what was sent."""

    @staticmethod
    def create_id(invoice_number: str) -> UUID:
        return collection_id(invoice_number)

    @event("Started")
    def __init__(
        self,
        invoice_number: str,
        customer_id: str,
        contract_id: str,
        currency: str,
        amount: Decimal,
        due_date: date,
        steps: list[dict[str, str]],
        payments: dict[str, Decimal] | None = None,
    ) -> None:
        self.invoice_number = invoice_number
        self.customer_id = customer_id
        self.contract_id = contract_id
        self.currency = currency
        self.amount = amount
        self.due_date = due_date
        self.steps = steps
        # Payments applied to the invoice before the collection started (None in the Started
        # events of billcycle versions that noted every payment after it).
        self.payments: dict[str, Decimal] = dict(payments or {})
        self.refunds: dict[str, Decimal] = {}
        self.recorded: dict[str, date] = {}
        self.ended: str | None = None  # why, once ended

    @classmethod
    def start(
        cls,
        invoice_number: str,
        customer_id: str,
        contract_id: str,
        currency: str,
        amount: Decimal,
        due_date: date,
        steps: list[dict[str, str]],
        paid_before: Sequence[Payment] = (),
    ) -> Collection:
        """The collection of an invoice, started with the payments applied to it before the
        start (in the order applied): its `outstanding` is then what is still unpaid. Those
        that settle the invoice end it at once."""
        collection = cls(
            invoice_number=invoice_number, customer_id=customer_id, contract_id=contract_id,
            currency=currency, amount=amount, due_date=due_date, steps=steps,
            payments={p.payment_id: p.amount for p in paid_before} or None,
        )
        paid = ZERO
        for p in paid_before:
            paid += p.amount
            if paid >= amount:  # the payment that settled it, as note_payment would say
                collection._ended(reason="paid", payment_id=p.payment_id,
                                  received_at=p.received_at)
                break
        return collection

    @property
    def outstanding(self) -> Decimal:
        """The invoice's balance after what was noted, as `Invoice.balance` counts it: its
        total less the payments plus the refunds (negative: what it holds for the customer,
        paid beyond what it owed and not paid back)."""
        return (self.amount - sum(self.payments.values(), ZERO)
                + sum(self.refunds.values(), ZERO))

    def note_payment(self, payment_id: str, amount: Decimal, received_at: datetime) -> None:
        """A payment on the invoice; the one that settles it ends the collection. One after
        the end is noted too: it is then held for the customer, until refunded."""
        if payment_id in self.payments:
            return
        self._payment_noted(payment_id=payment_id, amount=amount, received_at=received_at)
        if self.ended is None and self.outstanding <= ZERO:
            self._ended(reason="paid", payment_id=payment_id, received_at=received_at)

    @event("PaymentNoted")
    def _payment_noted(self, payment_id: str, amount: Decimal, received_at: datetime) -> None:
        self.payments[payment_id] = amount

    def note_refund(self, refund_id: str, amount: Decimal, paid_at: datetime) -> None:
        """Money paid back to the customer of what was paid beyond the invoice. It never
        reopens the collection: a refund pays back no more than the invoice holds
        (`Invoice.pay_refund`), so the invoice is settled before and after it."""
        if refund_id not in self.refunds:
            self._refund_noted(refund_id=refund_id, amount=amount, paid_at=paid_at)

    @event("RefundNoted")
    def _refund_noted(self, refund_id: str, amount: Decimal, paid_at: datetime) -> None:
        self.refunds[refund_id] = amount

    @event("Ended")
    def _ended(self, reason: str, payment_id: str, received_at: datetime) -> None:
        self.ended = reason

    def due(self, as_of: date) -> list[dict[str, Any]]:
        """The actions whose day has come by `as_of` and that were not yet sent."""
        if self.ended is not None:
            return []
        return [
            s for s in self.steps
            if date.fromisoformat(s["due_on"]) <= as_of and s["step"] not in self.recorded
        ]

    def record_action(self, step: str, recorded_on: date) -> None:
        """The action was sent on `recorded_on`; recording it again changes nothing."""
        found = next((s for s in self.steps if s["step"] == step), None)
        if found is None:
            known = ", ".join(s["step"] for s in self.steps) or "none"
            raise UnknownStep(
                f"collection of {self.invoice_number} has no step {step!r} (its steps: {known})"
            )
        if step not in self.recorded and self.ended is None:
            self._action_recorded(step=step, kind=found["kind"], due_on=found["due_on"],
                                  recorded_on=recorded_on)

    @event("ActionRecorded")
    def _action_recorded(self, step: str, kind: str, due_on: str, recorded_on: date) -> None:
        self.recorded[step] = recorded_on
