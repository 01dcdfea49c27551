"""Usage of customers with no contract: summed per customer and metric, and said by a run."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from domain.billing_runs import usage_without_contract_warning
from domain.usage import UsageWithoutContract, usage_without_contract


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def test_buckets_sum_per_customer_and_metric_exactly() -> None:
    buckets = [
        ("cus_a", "api_calls", at(3, 10), 2, Decimal("0.1"), at(3, 10)),
        ("cus_a", "api_calls", at(5, 9), 1, Decimal("0.2"), at(5, 9)),
        ("cus_a", "storage_gb", at(4), 1, Decimal("7"), at(4)),
        ("cus_b", "api_calls", at(1), 3, Decimal("30"), at(2)),
    ]
    assert usage_without_contract(buckets) == [
        UsageWithoutContract("cus_a", "api_calls", 3, Decimal("0.3"), at(3, 10), at(5, 9)),
        UsageWithoutContract("cus_a", "storage_gb", 1, Decimal("7"), at(4), at(4)),
        UsageWithoutContract("cus_b", "api_calls", 3, Decimal("30"), at(1), at(2)),
    ]


def test_the_warning_names_three_customers_and_counts_the_rest() -> None:
    unclaimed = [UsageWithoutContract(f"cus_{i}", "api_calls", 1, Decimal(1), at(i), at(i))
                 for i in range(1, 6)]
    assert usage_without_contract_warning(unclaimed) == (
        "usage of 5 customers with no contract (5 events) is not billed until a contract of "
        "theirs prices it: cus_1 (api_calls: 1 since 2026-10-01); cus_2 (api_calls: 1 since "
        "2026-10-02); cus_3 (api_calls: 1 since 2026-10-03) and 2 more; "
        "`billcycle report usage-without-contract` lists it")
