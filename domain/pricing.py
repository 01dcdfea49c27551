"""Pricing: what a quantity of usage costs under a component's pricing model, unrounded."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from domain.money import ZERO
from domain.terms import Graduated, Package, PerUnit, Pricing, Tier, Volume


def price(pricing: Pricing, quantity: Decimal) -> Decimal:
    """The amount for `quantity` under `pricing`; unrounded, zero for zero quantity."""
    if quantity < 0:
        raise ValueError(f"quantity {quantity} is negative; usage quantities must be >= 0")
    # No usage, no charge: not even a first tier's flat amount or a minimum package.
    if quantity == 0:
        return ZERO
    if isinstance(pricing, PerUnit):
        return quantity * pricing.unit_amount
    if isinstance(pricing, Graduated):
        return _graduated(pricing.tiers, quantity)
    if isinstance(pricing, Volume):
        return _volume(pricing.tiers, quantity)
    return _package(pricing, quantity)


def _graduated(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    total = ZERO
    lower = ZERO
    for tier in tiers:
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        total += (upper - lower) * tier.unit_amount + tier.flat_amount
        if tier.up_to is None or quantity <= tier.up_to:
            return total
        lower = tier.up_to
    raise ValueError(f"quantity {quantity} is above the last tier; the last up_to must be null")


def _volume(tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return quantity * tier.unit_amount + tier.flat_amount
    raise ValueError(f"quantity {quantity} is above the last tier; the last up_to must be null")


def _package(pricing: Package, quantity: Decimal) -> Decimal:
    # Integer division and remainder are exact in Decimal, unlike quantity / size, whose
    # rounding could hide a partly used package.
    whole, rest = divmod(quantity, pricing.package_size)
    return (whole + (1 if rest else 0)) * pricing.package_amount


def minimum_true_up(usage_amount: Decimal, minimum_amount: Decimal | None) -> Decimal:
    """What tops a period's usage amount up to the minimum; zero when it is reached."""
    if minimum_amount is None or usage_amount >= minimum_amount:
        return ZERO
    return minimum_amount - usage_amount


def _amount_problem(name: str, value: Decimal) -> str | None:
    if not value.is_finite():
        return f"{name} {value}; amounts must be finite decimals"
    if value < 0:
        return f"{name} {value}; amounts must not be negative"
    return None


def tier_problems(tiers: Sequence[Tier]) -> list[str]:
    """What is wrong with a graduated or volume tier list, one sentence each; empty when fine."""
    if not tiers:
        return ["tiers are empty; give at least one tier, the last with up_to null"]
    problems: list[str] = []
    previous: Decimal | None = None
    for number, tier in enumerate(tiers, start=1):
        for name, amount in (("unit_amount", tier.unit_amount), ("flat_amount", tier.flat_amount)):
            problem = _amount_problem(f"tier {number} {name}", amount)
            if problem:
                problems.append(problem)
        up_to = tier.up_to
        if up_to is None:
            if number < len(tiers):
                problems.append(
                    f"tier {number} up_to null before the last tier; only the last tier may "
                    "be open-ended"
                )
            continue
        if not up_to.is_finite():
            problems.append(f"tier {number} up_to {up_to}; up_to must be a finite decimal")
            continue
        if number == len(tiers):
            problems.append(
                f"last tier {number} up_to {up_to}; the last tier must have up_to null so "
                "every quantity has a price"
            )
        if previous is None and up_to <= 0:
            problems.append(f"tier {number} up_to {up_to}; up_to must be positive")
        elif previous is not None and up_to <= previous:
            problems.append(f"tier {number} up_to {up_to} after {previous}; tiers must ascend")
        # Compare with the highest bound so far, so every tier out of order is named.
        previous = up_to if previous is None else max(previous, up_to)
    return problems


def pricing_problems(pricing: Pricing) -> list[str]:
    """What is wrong with a pricing of any model, one sentence each; empty when fine."""
    if isinstance(pricing, PerUnit):
        problem = _amount_problem("unit_amount", pricing.unit_amount)
        return [problem] if problem else []
    if isinstance(pricing, Graduated | Volume):
        return tier_problems(pricing.tiers)
    problems: list[str] = []
    size = pricing.package_size
    if not size.is_finite() or size <= 0:
        problems.append(f"package_size {size}; it must be a positive decimal")
    problem = _amount_problem("package_amount", pricing.package_amount)
    if problem:
        problems.append(problem)
    return problems
