"""Invoice lines and their kinds, as they appear on invoices and in InvoiceIssued events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

# What a line's basis may hold: JSON-native values only (no float, Decimal or date), so that
# its record can be stored as JSONRecords without a walk over every value.
BasisValue = str | int | bool | list[str]


class LineKind(StrEnum):
    SUBSCRIPTION = "subscription"
    USAGE = "usage"
    MILESTONE = "milestone"
    PRORATION = "proration"
    LATE_USAGE = "late_usage"
    MINIMUM_TRUE_UP = "minimum_true_up"


@dataclass(frozen=True)
class InvoiceLine:
    component_id: str
    kind: LineKind
    description: str
    quantity: Decimal
    amount: Decimal  # already rounded to the currency's minor units
    period_start: date
    period_end: date
    unit_amount: Decimal | None = None
    # Why the line has its amount: usage read, terms version, proration days (for explain).
    basis: dict[str, BasisValue] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "component_id": self.component_id,
            "kind": self.kind._value_,  # the plain attribute: `.value` is a descriptor call
            "description": self.description,
            "quantity": str(self.quantity),
            "unit_amount": None if self.unit_amount is None else str(self.unit_amount),
            "amount": str(self.amount),
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "basis": self.basis,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> InvoiceLine:
        return cls(
            component_id=r["component_id"],
            kind=LineKind(r["kind"]),
            description=r["description"],
            quantity=Decimal(r["quantity"]),
            amount=Decimal(r["amount"]),
            period_start=date.fromisoformat(r["period_start"]),
            period_end=date.fromisoformat(r["period_end"]),
            unit_amount=None if r.get("unit_amount") is None else Decimal(r["unit_amount"]),
            basis=dict(r.get("basis") or {}),
        )


_KINDS = tuple(LineKind)  # iterating the enum class itself is slow


def subtotals(lines: list[InvoiceLine]) -> dict[str, Decimal]:
    """Subtotal per line kind, in the fixed order of LineKind, omitting kinds with no line."""
    amounts: dict[LineKind, list[Decimal]] = {}
    for line in lines:  # one pass; each kind's amounts in line order, summed as before
        amounts.setdefault(line.kind, []).append(line.amount)
    return {
        kind.value: sum(amounts[kind], Decimal(0)) for kind in _KINDS if kind in amounts
    }
