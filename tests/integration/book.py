"""A plain book of many monthly contracts with usage, for integration tests."""

from __future__ import annotations

import json
from typing import Any


def many_contracts(count: int, usage_per_contract: int = 2) -> bytes:
    lines: list[dict[str, Any]] = []
    for n in range(count):
        cid = f"ct_{n:05d}"
        lines.append({
            "type": "contract.created", "id": f"c-{n}", "occurred_at": "2026-10-01T00:00:00Z",
            "contract_id": cid, "customer_id": f"cus_{n:05d}", "currency": "USD",
            "start_date": "2026-10-01", "billing_frequency": "monthly",
            "components": [
                {"id": "platform", "kind": "subscription", "amount": f"{100 + n}.00"},
                {"id": "api", "kind": "usage", "metric": "api_calls",
                 "pricing": {"model": "per_unit", "unit_amount": "0.01"}},
            ],
        })
        for k in range(usage_per_contract):
            lines.append({
                "type": "usage", "id": f"u-{n}-{k}", "occurred_at": "2026-10-15T12:00:00Z",
                "customer_id": f"cus_{n:05d}", "metric": "api_calls", "quantity": str(k + 1),
            })
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)
