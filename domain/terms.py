"""Contract terms: components, pricing models and the terms that hold from a date on.

These are plain immutable values. Messages are validated by `consumers.messages`; the domain
trusts what reaches it. `to_record` / `from_record` give the JSON-able form stored in events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar


class BillingFrequency(StrEnum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    ANNUAL = "annual"

    @property
    def months(self) -> int:
        return {"monthly": 1, "quarterly": 3, "annual": 12}[self.value]


class BillingTiming(StrEnum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


class Aggregation(StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    LATEST = "latest"
    UNIQUE_COUNT = "unique_count"


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None
    unit_amount: Decimal
    flat_amount: Decimal = Decimal(0)


@dataclass(frozen=True)
class PerUnit:
    unit_amount: Decimal


@dataclass(frozen=True)
class Graduated:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Volume:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Package:
    package_size: Decimal
    package_amount: Decimal


Pricing = PerUnit | Graduated | Volume | Package


@dataclass(frozen=True)
class SubscriptionComponent:
    id: str
    amount: Decimal
    quantity: Decimal = Decimal(1)
    billing_timing: BillingTiming = BillingTiming.IN_ADVANCE

    @property
    def amount_per_period(self) -> Decimal:
        """The full-period charge: amount x quantity, unrounded."""
        return self.amount * self.quantity


@dataclass(frozen=True)
class UsageComponent:
    id: str
    metric: str
    pricing: Pricing
    aggregation: Aggregation = Aggregation.SUM
    unique_property: str | None = None
    minimum_amount: Decimal | None = None


@dataclass(frozen=True)
class MilestoneComponent:
    id: str
    milestone: str
    amount: Decimal


Component = SubscriptionComponent | UsageComponent | MilestoneComponent


@dataclass(frozen=True)
class TermsVersion:
    """Components and per-contract settings in effect from `effective_date` on."""

    effective_date: date
    components: tuple[Component, ...]
    usage_threshold_amount: Decimal | None
    payment_terms_days: int

    def component(self, component_id: str) -> Component | None:
        return next((c for c in self.components if c.id == component_id), None)

    @property
    def usage_metrics(self) -> frozenset[str]:
        """The metrics these terms price usage of."""
        return frozenset(c.metric for c in self.components if isinstance(c, UsageComponent))


@dataclass(frozen=True)
class ContractTerms:
    """What a contract.created message establishes."""

    contract_id: str
    customer_id: str
    currency: str
    start_date: date
    timezone: str
    billing_frequency: BillingFrequency
    billing_anchor_date: date
    payment_terms_days: int
    components: tuple[Component, ...]
    end_date: date | None = None
    usage_threshold_amount: Decimal | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- records: the JSON-able form kept in stored events -------------------------------------


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def pricing_to_record(pricing: Pricing) -> dict[str, Any]:
    if isinstance(pricing, PerUnit):
        return {"model": "per_unit", "unit_amount": str(pricing.unit_amount)}
    if isinstance(pricing, Package):
        return {
            "model": "package",
            "package_size": str(pricing.package_size),
            "package_amount": str(pricing.package_amount),
        }
    model = "graduated" if isinstance(pricing, Graduated) else "volume"
    return {
        "model": model,
        "tiers": [
            {
                "up_to": _str(t.up_to),
                "unit_amount": str(t.unit_amount),
                "flat_amount": str(t.flat_amount),
            }
            for t in pricing.tiers
        ],
    }


def pricing_from_record(record: dict[str, Any]) -> Pricing:
    model = record["model"]
    if model == "per_unit":
        return PerUnit(Decimal(record["unit_amount"]))
    if model == "package":
        return Package(Decimal(record["package_size"]), Decimal(record["package_amount"]))
    tiers = tuple(
        Tier(
            up_to=_dec(t.get("up_to")),
            unit_amount=Decimal(t["unit_amount"]),
            flat_amount=Decimal(t.get("flat_amount") or 0),
        )
        for t in record["tiers"]
    )
    return Graduated(tiers) if model == "graduated" else Volume(tiers)


def component_to_record(component: Component) -> dict[str, Any]:
    if isinstance(component, SubscriptionComponent):
        return {
            "id": component.id,
            "kind": "subscription",
            "amount": str(component.amount),
            "quantity": str(component.quantity),
            "billing_timing": component.billing_timing.value,
        }
    if isinstance(component, UsageComponent):
        return {
            "id": component.id,
            "kind": "usage",
            "metric": component.metric,
            "aggregation": component.aggregation.value,
            "unique_property": component.unique_property,
            "pricing": pricing_to_record(component.pricing),
            "minimum_amount": _str(component.minimum_amount),
        }
    return {
        "id": component.id,
        "kind": "milestone",
        "milestone": component.milestone,
        "amount": str(component.amount),
    }


# Enum members by value: calling the enum class to look one up goes through EnumType.__call__.
_TIMINGS = {t.value: t for t in BillingTiming}
_AGGREGATIONS = {a.value: a for a in Aggregation}


def component_from_record(record: dict[str, Any]) -> Component:
    kind = record["kind"]
    if kind == "subscription":
        return SubscriptionComponent(
            id=record["id"],
            amount=Decimal(record["amount"]),
            quantity=Decimal(record.get("quantity") or 1),
            billing_timing=_member(_TIMINGS, BillingTiming, record.get("billing_timing")
                                   or "in_advance"),
        )
    if kind == "usage":
        return UsageComponent(
            id=record["id"],
            metric=record["metric"],
            pricing=pricing_from_record(record["pricing"]),
            aggregation=_member(_AGGREGATIONS, Aggregation, record.get("aggregation") or "sum"),
            unique_property=record.get("unique_property"),
            minimum_amount=_dec(record.get("minimum_amount")),
        )
    return MilestoneComponent(
        id=record["id"], milestone=record["milestone"], amount=Decimal(record["amount"])
    )


E = TypeVar("E", bound=StrEnum)


def _member(members: dict[str, E], kind: type[E], value: str) -> E:
    """The member of `kind` with this value (an unknown value fails as `kind(value)` does)."""
    found = members.get(value)
    return found if found is not None else kind(value)
