"""Pricing models, minimums and tier validation, scenario by scenario."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.pricing import minimum_true_up, price, pricing_problems, tier_problems
from domain.terms import Graduated, Package, PerUnit, Tier, Volume


def dec(text: str) -> Decimal:
    return Decimal(text)


def tier(up_to: str | None, unit_amount: str, flat_amount: str = "0") -> Tier:
    return Tier(None if up_to is None else dec(up_to), dec(unit_amount), dec(flat_amount))


# The contract's example: the first 1000 API calls free, then 0.002 each.
API_CALLS = (tier("1000", "0"), tier(None, "0.002"))

# Three tiers with flat fees, to see which flats apply.
STEPPED = (tier("100", "1.00", "10"), tier("500", "0.50", "20"), tier(None, "0.25", "30"))


# --- per unit -----------------------------------------------------------------------------


def test_per_unit_is_quantity_times_unit_amount() -> None:
    assert price(PerUnit(dec("0.002")), dec("1500")) == dec("3.000")


def test_per_unit_keeps_full_precision_of_fractional_quantities() -> None:
    # GB-hours: 12.5 x 0.0137 is 0.17125, not rounded here.
    assert price(PerUnit(dec("0.0137")), dec("12.5")) == dec("0.17125")


# --- graduated ----------------------------------------------------------------------------


def test_graduated_prices_only_the_units_above_the_free_tier() -> None:
    pricing = Graduated(API_CALLS)
    assert price(pricing, dec("500")) == 0
    assert price(pricing, dec("1000")) == 0
    assert price(pricing, dec("1500")) == dec("1.000")


def test_graduated_adds_each_reached_tiers_flat_amount_once() -> None:
    pricing = Graduated(STEPPED)
    assert price(pricing, dec("50")) == dec("50") + 10
    # Exactly up_to stays in the first tier: the second tier's flat is not added.
    assert price(pricing, dec("100")) == dec("100") + 10
    assert price(pricing, dec("101")) == dec("100") + 10 + dec("0.50") + 20
    assert price(pricing, dec("600")) == dec("100") + 10 + dec("200") + 20 + dec("25") + 30


def test_graduated_with_a_fractional_quantity_just_over_a_bound() -> None:
    assert price(Graduated(STEPPED), dec("100.5")) == dec("100") + 10 + dec("0.25") + 20


# --- volume -------------------------------------------------------------------------------


def test_volume_prices_every_unit_at_the_tier_the_total_falls_in() -> None:
    pricing = Volume(STEPPED)
    assert price(pricing, dec("50")) == dec("50") + 10
    assert price(pricing, dec("100")) == dec("100") + 10
    assert price(pricing, dec("101")) == dec("50.50") + 20
    assert price(pricing, dec("600")) == dec("150") + 30


def test_volume_total_can_drop_when_a_cheaper_tier_is_reached() -> None:
    # A volume discount is not monotone: that is the model, not a bug.
    pricing = Volume((tier("100", "1.00"), tier(None, "0.50")))
    assert price(pricing, dec("100")) == dec("100")
    assert price(pricing, dec("101")) == dec("50.50")


# --- package ------------------------------------------------------------------------------


def test_package_charges_whole_packages_started() -> None:
    pricing = Package(package_size=dec("1000"), package_amount=dec("5.00"))
    assert price(pricing, dec("1")) == dec("5.00")
    assert price(pricing, dec("1000")) == dec("5.00")
    assert price(pricing, dec("1001")) == dec("10.00")
    assert price(pricing, dec("2500")) == dec("15.00")


def test_package_notices_a_sliver_over_a_whole_number_of_packages() -> None:
    # quantity / size would round this to exactly 3 at 28 digits; divmod does not.
    pricing = Package(package_size=dec("3"), package_amount=dec("1"))
    assert price(pricing, dec("9.000000000000000000000000001")) == 4


def test_package_with_fractional_size() -> None:
    pricing = Package(package_size=dec("0.5"), package_amount=dec("2"))
    assert price(pricing, dec("1.2")) == 6


# --- zero and negative quantities ---------------------------------------------------------


@pytest.mark.parametrize(
    "pricing",
    [
        PerUnit(dec("3")),
        Graduated(STEPPED),
        Volume(STEPPED),
        Package(package_size=dec("10"), package_amount=dec("7")),
    ],
)
def test_zero_quantity_is_zero_whatever_the_model(
    pricing: PerUnit | Graduated | Volume | Package,
) -> None:
    assert price(pricing, dec("0")) == 0


def test_a_negative_quantity_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantity -1 is negative"):
        price(PerUnit(dec("1")), dec("-1"))


# --- minimums -----------------------------------------------------------------------------


def test_minimum_true_up_adds_the_difference_below_the_minimum() -> None:
    assert minimum_true_up(dec("30.00"), dec("100.00")) == dec("70.00")
    assert minimum_true_up(dec("0"), dec("100.00")) == dec("100.00")


def test_no_true_up_at_or_above_the_minimum_or_without_one() -> None:
    assert minimum_true_up(dec("100.00"), dec("100.00")) == 0
    assert minimum_true_up(dec("150.00"), dec("100.00")) == 0
    assert minimum_true_up(dec("10.00"), None) == 0


# --- tier validation ----------------------------------------------------------------------


def test_a_good_tier_list_has_no_problems() -> None:
    assert tier_problems(API_CALLS) == []
    assert tier_problems(STEPPED) == []
    assert tier_problems([tier(None, "0.01")]) == []


def test_tiers_out_of_order_are_named() -> None:
    problems = tier_problems([tier("100", "1"), tier("50", "1"), tier(None, "1")])
    assert problems == ["tier 2 up_to 50 after 100; tiers must ascend"]


def test_every_tier_out_of_order_is_named_against_the_highest_bound() -> None:
    problems = tier_problems(
        [tier("100", "1"), tier("50", "1"), tier("80", "1"), tier("100", "1"), tier(None, "1")]
    )
    assert problems == [
        "tier 2 up_to 50 after 100; tiers must ascend",
        "tier 3 up_to 80 after 100; tiers must ascend",
        "tier 4 up_to 100 after 100; tiers must ascend",
    ]


def test_the_last_tier_must_be_open_ended() -> None:
    assert tier_problems([tier("100", "1"), tier("500", "1")]) == [
        "last tier 2 up_to 500; the last tier must have up_to null so every quantity has a price"
    ]


def test_only_the_last_tier_may_be_open_ended() -> None:
    assert tier_problems([tier(None, "1"), tier(None, "2")]) == [
        "tier 1 up_to null before the last tier; only the last tier may be open-ended"
    ]


def test_negative_and_non_finite_amounts_are_named() -> None:
    assert tier_problems([tier("10", "-1"), tier(None, "1", "-5")]) == [
        "tier 1 unit_amount -1; amounts must not be negative",
        "tier 2 flat_amount -5; amounts must not be negative",
    ]
    assert tier_problems([tier("NaN", "1"), tier(None, "Infinity")]) == [
        "tier 1 up_to NaN; up_to must be a finite decimal",
        "tier 2 unit_amount Infinity; amounts must be finite decimals",
    ]


def test_a_first_bound_of_zero_or_less_is_named() -> None:
    assert tier_problems([tier("0", "1"), tier(None, "1")]) == [
        "tier 1 up_to 0; up_to must be positive"
    ]


def test_an_empty_tier_list_is_named() -> None:
    assert tier_problems([]) == [
        "tiers are empty; give at least one tier, the last with up_to null"
    ]


def test_pricing_problems_covers_every_model() -> None:
    assert pricing_problems(PerUnit(dec("0.002"))) == []
    assert pricing_problems(PerUnit(dec("-1"))) == ["unit_amount -1; amounts must not be negative"]
    assert pricing_problems(Volume(())) == tier_problems([])
    assert pricing_problems(Graduated((tier("5", "1"),))) == tier_problems([tier("5", "1")])
    assert pricing_problems(Package(dec("0"), dec("-2"))) == [
        "package_size 0; it must be a positive decimal",
        "package_amount -2; amounts must not be negative",
    ]
    assert pricing_problems(Package(dec("100"), dec("5"))) == []
