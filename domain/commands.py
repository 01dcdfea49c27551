"""Commands the ingest pipeline gives the billing application, one per accepted message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from domain.terms import Component, ContractTerms


@dataclass(frozen=True)
class Command:
    message_id: str
    message_type: str
    fingerprint: str
    occurred_at: datetime


@dataclass(frozen=True)
class CreateContract(Command):
    terms: ContractTerms


@dataclass(frozen=True)
class AmendContract(Command):
    contract_id: str
    effective_date: date
    components: tuple[Component, ...]
    usage_threshold_amount: Decimal | None
    sets_usage_threshold: bool  # False: the threshold stays as it was
    payment_terms_days: int | None  # None: unchanged


@dataclass(frozen=True)
class TerminateContract(Command):
    contract_id: str
    end_date: date


@dataclass(frozen=True)
class CompleteMilestone(Command):
    contract_id: str
    milestone: str
    completed_on: date


@dataclass(frozen=True)
class RecordUsage(Command):
    customer_id: str
    metric: str
    quantity: Decimal
    properties: dict[str, Any]
    properties_json: str  # the properties as canonical JSON (sorted keys), computed once
    contract_id: str | None
    occurred_at_iso: str = ""  # occurred_at.isoformat(), when computed already (fingerprint)

    @classmethod
    def of(
        cls,
        message_id: str,
        fingerprint: str,
        occurred_at: datetime,
        customer_id: str,
        metric: str,
        quantity: Decimal,
        properties: dict[str, Any],
        properties_json: str,
        contract_id: str | None,
        occurred_at_iso: str,
    ) -> RecordUsage:
        """The same command as the constructor, built in one step: a frozen dataclass's
        __init__ sets each of the 11 fields through object.__setattr__ (2 us, per message)."""
        command = object.__new__(cls)
        object.__setattr__(command, "__dict__", {
            "message_id": message_id, "message_type": "usage", "fingerprint": fingerprint,
            "occurred_at": occurred_at, "customer_id": customer_id, "metric": metric,
            "quantity": quantity, "properties": properties, "properties_json": properties_json,
            "contract_id": contract_id, "occurred_at_iso": occurred_at_iso,
        })
        return command


@dataclass(frozen=True)
class DeclareWatermark(Command):
    metric: str
    complete_through: datetime
    source: str


@dataclass(frozen=True)
class ReceivePayment(Command):
    invoice_number: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class PayRefund(Command):
    """Money paid back to a customer, of what a document holds for them: a credit note's
    amount, or paid beyond what an invoice owed."""

    invoice_number: str
    amount: Decimal
    currency: str


class Origin(NamedTuple):
    """Where a message came from: its source, its position there and its original bytes.

    A NamedTuple, not a frozen dataclass: one is built per message received, and a tuple is
    built in C."""

    source: str  # e.g. "file:usage.jsonl" or "kafka:billing.usage/2"
    position: str  # e.g. "line 17" or "offset 4211"
    raw: bytes

    @property
    def key(self) -> str:
        return f"{self.source}@{self.position}"

    @property
    def order(self) -> tuple[str, int]:
        """Where it was in its input, to sort by: "line 9" before "line 10"."""
        _, _, number = self.position.rpartition(" ")
        return self.source, int(number) if number.isdigit() else -1


@dataclass(frozen=True)
class Rejected:
    """Input that cannot be accepted: kept as a dead letter with where it came from and why."""

    origin: Origin
    reason: str
    message_id: str | None = None
