"""Contract components and their pricing, as sent in contract.created and contract.amended."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from consumers.messages.fields import (
    MessagePart,
    Name,
    NonNegativeDecimal,
    PositiveDecimal,
    rule_error,
)
from domain.pricing import tier_problems
from domain.terms import (
    Aggregation,
    BillingTiming,
    Component,
    Graduated,
    MilestoneComponent,
    Package,
    PerUnit,
    Pricing,
    SubscriptionComponent,
    Tier,
    UsageComponent,
    Volume,
)


class TierIn(MessagePart):
    up_to: NonNegativeDecimal | None = Field(
        description="Upper bound of the tier, inclusive; null (only) on the last tier."
    )
    unit_amount: NonNegativeDecimal
    flat_amount: NonNegativeDecimal = Field(
        default=Decimal(0), description="Added once when any unit falls in the tier; default 0."
    )

    def to_tier(self) -> Tier:
        return Tier(up_to=self.up_to, unit_amount=self.unit_amount, flat_amount=self.flat_amount)


class PerUnitIn(MessagePart):
    model: Literal["per_unit"]
    unit_amount: NonNegativeDecimal

    def to_pricing(self) -> Pricing:
        return PerUnit(self.unit_amount)


class _TieredIn(MessagePart):
    tiers: list[TierIn] = Field(description="Ascending by up_to; the last up_to is null.")

    @field_validator("tiers")
    @classmethod
    def _tiers_ascend(cls, tiers: list[TierIn]) -> list[TierIn]:
        problems = tier_problems([tier.to_tier() for tier in tiers])
        if problems:
            raise rule_error("tiers_invalid", "; ".join(problems))
        return tiers

    def _tiers(self) -> tuple[Tier, ...]:
        return tuple(tier.to_tier() for tier in self.tiers)


class GraduatedIn(_TieredIn):
    model: Literal["graduated"]

    def to_pricing(self) -> Pricing:
        return Graduated(self._tiers())


class VolumeIn(_TieredIn):
    model: Literal["volume"]

    def to_pricing(self) -> Pricing:
        return Volume(self._tiers())


class PackageIn(MessagePart):
    model: Literal["package"]
    package_size: PositiveDecimal
    package_amount: NonNegativeDecimal

    def to_pricing(self) -> Pricing:
        return Package(self.package_size, self.package_amount)


PricingIn = Annotated[PerUnitIn | GraduatedIn | VolumeIn | PackageIn, Field(discriminator="model")]


class SubscriptionIn(MessagePart):
    kind: Literal["subscription"]
    id: Name
    amount: NonNegativeDecimal = Field(description="Charge per unit of quantity per full period.")
    quantity: NonNegativeDecimal = Field(default=Decimal(1), description="Default 1.")
    billing_timing: BillingTiming = Field(
        default=BillingTiming.IN_ADVANCE, description="Default in_advance."
    )

    def to_component(self) -> Component:
        return SubscriptionComponent(
            id=self.id,
            amount=self.amount,
            quantity=self.quantity,
            billing_timing=self.billing_timing,
        )


class UsageIn(MessagePart):
    kind: Literal["usage"]
    id: Name
    metric: Name
    aggregation: Aggregation = Field(default=Aggregation.SUM, description="Default sum.")
    unique_property: Name | None = Field(
        default=None,
        description="Required with aggregation unique_count (and only then): the property "
        "whose distinct values are counted.",
    )
    pricing: PricingIn
    minimum_amount: NonNegativeDecimal | None = None

    @model_validator(mode="after")
    def _unique_property_iff_unique_count(self) -> UsageIn:
        counts_unique = self.aggregation is Aggregation.UNIQUE_COUNT
        if counts_unique and self.unique_property is None:
            raise rule_error(
                "unique_property_missing",
                'aggregation unique_count needs "unique_property", the property whose distinct '
                "values are counted",
                at=".unique_property",
            )
        if not counts_unique and self.unique_property is not None:
            raise rule_error(
                "unique_property_unused",
                f'set, but aggregation is "{self.aggregation}"; remove unique_property or use '
                "aggregation unique_count",
                at=".unique_property",
            )
        return self

    def to_component(self) -> Component:
        return UsageComponent(
            id=self.id,
            metric=self.metric,
            pricing=self.pricing.to_pricing(),
            aggregation=self.aggregation,
            unique_property=self.unique_property,
            minimum_amount=self.minimum_amount,
        )


class MilestoneIn(MessagePart):
    kind: Literal["milestone"]
    id: Name
    milestone: Name
    amount: NonNegativeDecimal

    def to_component(self) -> Component:
        return MilestoneComponent(id=self.id, milestone=self.milestone, amount=self.amount)


ComponentIn = Annotated[SubscriptionIn | UsageIn | MilestoneIn, Field(discriminator="kind")]


def _ids_unique(components: list[ComponentIn]) -> list[ComponentIn]:
    first_index: dict[str, int] = {}
    for index, component in enumerate(components):
        first = first_index.setdefault(component.id, index)
        if first != index:
            raise rule_error(
                "component_id_duplicate",
                f'"{component.id}" is already the id of components[{first}]; component ids '
                "must be unique",
                at=f"[{index}].id",
            )
    return components


Components = Annotated[
    list[ComponentIn],
    AfterValidator(_ids_unique),
    Field(description="The full component list; ids unique within it."),
]


def to_components(components: Sequence[ComponentIn]) -> tuple[Component, ...]:
    """The domain components of a validated component list."""
    return tuple(component.to_component() for component in components)
