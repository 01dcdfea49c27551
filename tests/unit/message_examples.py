"""One valid example of each inbound message, as contract.md §1 shows them (shared by tests)."""

from __future__ import annotations

import copy
import json
from typing import Any

# contract.md's contract.created example, verbatim.
CONTRACT_CREATED: dict[str, Any] = json.loads("""
{"type": "contract.created", "id": "m-1", "occurred_at": "2026-10-01T00:00:00Z",
 "contract_id": "ct_1", "customer_id": "cus_1", "currency": "USD",
 "start_date": "2026-10-01", "end_date": null, "timezone": "UTC",
 "billing_frequency": "monthly", "billing_anchor_date": "2026-10-01",
 "payment_terms_days": 30, "usage_threshold_amount": null,
 "components": [
   {"id": "platform", "kind": "subscription", "amount": "1000.00", "quantity": "1",
    "billing_timing": "in_advance"},
   {"id": "api", "kind": "usage", "metric": "api_calls", "aggregation": "sum",
    "pricing": {"model": "graduated", "tiers": [
      {"up_to": "1000", "unit_amount": "0", "flat_amount": "0"},
      {"up_to": null, "unit_amount": "0.002"}]},
    "minimum_amount": null},
   {"id": "golive", "kind": "milestone", "milestone": "go_live", "amount": "5000.00"}]}
""")

CONTRACT_AMENDED: dict[str, Any] = {
    "type": "contract.amended",
    "id": "m-2",
    "occurred_at": "2026-11-15T09:30:00Z",
    "contract_id": "ct_1",
    "effective_date": "2026-11-15",
    "components": [
        {"id": "platform", "kind": "subscription", "amount": "1500.00"},
        {
            "id": "seats",
            "kind": "usage",
            "metric": "active_users",
            "aggregation": "unique_count",
            "unique_property": "user_id",
            "pricing": {"model": "package", "package_size": "10", "package_amount": "50"},
        },
    ],
    "usage_threshold_amount": "2000.00",
    "payment_terms_days": 45,
}

CONTRACT_TERMINATED: dict[str, Any] = {
    "type": "contract.terminated",
    "id": "m-3",
    "occurred_at": "2026-12-20T17:00:00+01:00",
    "contract_id": "ct_1",
    "end_date": "2027-01-01",
}

MILESTONE_COMPLETED: dict[str, Any] = {
    "type": "milestone.completed",
    "id": "m-4",
    "occurred_at": "2026-10-20T12:00:00Z",
    "contract_id": "ct_1",
    "milestone": "go_live",
    "completed_on": "2026-10-20",
}

USAGE: dict[str, Any] = {
    "type": "usage",
    "id": "evt-123",
    "occurred_at": "2026-11-03T10:00:00Z",
    "customer_id": "cus_1",
    "metric": "api_calls",
    "quantity": "500",
    "properties": {"region": "eu"},
}

USAGE_WATERMARK: dict[str, Any] = {
    "type": "usage.watermark",
    "id": "wm-1",
    "occurred_at": "2026-11-02T00:05:00Z",
    "metric": "api_calls",
    "complete_through": "2026-11-01T00:00:00Z",
    "source": "gateway",
}

PAYMENT_RECEIVED: dict[str, Any] = {
    "type": "payment.received",
    "id": "pay-1",
    "occurred_at": "2026-11-20T08:00:00Z",
    "invoice_number": "INV-000001",
    "amount": "1005.00",
    "currency": "USD",
}

REFUND_PAID: dict[str, Any] = {
    "type": "refund.paid",
    "id": "ref-1",
    "occurred_at": "2026-11-25T08:00:00Z",
    "invoice_number": "INV-000001",
    "amount": "20.00",
    "currency": "USD",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    example["type"]: example
    for example in (
        CONTRACT_CREATED,
        CONTRACT_AMENDED,
        CONTRACT_TERMINATED,
        MILESTONE_COMPLETED,
        USAGE,
        USAGE_WATERMARK,
        PAYMENT_RECEIVED,
        REFUND_PAID,
    )
}


def changed(example: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `example` with the value at a dotted path ("components.1.id") replaced;
    the value `...` removes the key."""
    result = copy.deepcopy(example)
    *parents, last = path.split(".")
    target: Any = result
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if isinstance(target, list):
        target[int(last)] = value
    elif value is ...:
        del target[last]
    else:
        target[last] = value
    return result
