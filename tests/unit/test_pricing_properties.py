"""Properties of the pricing models that must hold for every valid tier list and quantity."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.pricing import price, tier_problems
from domain.terms import Graduated, Package, PerUnit, Tier, Volume

quantities = st.decimals(min_value=0, max_value=Decimal("1e7"), places=3, allow_nan=False)
unit_amounts = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False)
flat_amounts = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False)
bounds = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1e6"), places=3)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    """Ascending tiers with the last open-ended: what validation lets through."""
    ups = sorted(draw(st.sets(bounds, max_size=4)))
    return tuple(Tier(up_to, draw(unit_amounts), draw(flat_amounts)) for up_to in [*ups, None])


@given(tier_lists())
def test_generated_tiers_are_valid(tiers: tuple[Tier, ...]) -> None:
    assert tier_problems(tiers) == []


@given(tier_lists(), quantities, quantities)
def test_graduated_price_never_falls_as_quantity_grows(
    tiers: tuple[Tier, ...], a: Decimal, b: Decimal
) -> None:
    low, high = sorted((a, b))
    assert price(Graduated(tiers), low) <= price(Graduated(tiers), high)


@given(unit_amounts, quantities)
def test_graduated_with_one_tier_is_per_unit(unit_amount: Decimal, quantity: Decimal) -> None:
    one_tier = Graduated((Tier(None, unit_amount),))
    assert price(one_tier, quantity) == price(PerUnit(unit_amount), quantity)


@given(tier_lists(), st.floats(min_value=0, max_value=1))
def test_volume_and_graduated_agree_within_the_first_tier(
    tiers: tuple[Tier, ...], share: float
) -> None:
    first = tiers[0].up_to
    quantity = (Decimal("1000") if first is None else first) * Decimal(str(share))
    assert price(Volume(tiers), quantity) == price(Graduated(tiers), quantity)


@given(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1e5"), places=3),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e4"), places=2),
    quantities,
)
def test_package_price_is_the_fewest_whole_packages_that_hold_the_quantity(
    size: Decimal, amount: Decimal, quantity: Decimal
) -> None:
    total = price(Package(size, amount), quantity)
    packages = total / amount
    assert packages == packages.to_integral_value()
    assert packages * size >= quantity
    assert (packages - 1) * size < quantity or quantity == 0
