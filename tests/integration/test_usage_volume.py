"""Usage volume: recording one more event and pricing an invoice read no more as usage grows.

Cost is counted in stored events read back, which is what would grow with volume if billing
scanned usage instead of keeping running meters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_runs import BillingRuns
from infra.store.url import store_env

CONTRACT = {
    "type": "contract.created", "id": "c-1", "occurred_at": "2026-10-01T00:00:00Z",
    "contract_id": "ct_1", "customer_id": "cus_1", "currency": "USD",
    "start_date": "2026-10-01", "billing_frequency": "monthly",
    "components": [{"id": "api", "kind": "usage", "metric": "api_calls",
                    "pricing": {"model": "per_unit", "unit_amount": "0.001"}}],
}


def usage(n: int) -> dict[str, Any]:
    return {"type": "usage", "id": f"u-{n}", "occurred_at": f"2026-10-{1 + n % 28:02d}T10:00:00Z",
            "customer_id": "cus_1", "metric": "api_calls", "quantity": "1",
            "properties": {"region": f"r{n % 3}"}}


def lines(*messages: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in messages))


class ReadCounter:
    """Counts stored events the application reads back, whatever the method."""

    def __init__(self, app: BillingApplication, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events = 0
        recorder = app.recorder
        for name in ("select_events", "events_of", "first_versions", "select_notifications"):
            monkeypatch.setattr(recorder, name, self._counting(getattr(recorder, name)))

    def _counting(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            found = method(*args, **kwargs)
            values = found.values() if isinstance(found, dict) else [found]
            for value in values:
                self.events += len(value) if isinstance(value, list | tuple) else 1
            return found
        return counted


@pytest.fixture
def app(tmp_path: Path) -> Iterator[BillingApplication]:
    application = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'v.db'}"))
    yield application
    application.close()


def cost_of_one_more_event_and_an_invoice(
    app: BillingApplication, monkeypatch: pytest.MonkeyPatch, already: int
) -> tuple[int, int, str]:
    pipeline = IngestPipeline(app)
    pipeline.process_lines(lines(CONTRACT, *(usage(n) for n in range(already))), "test")
    with monkeypatch.context() as patch:
        counter = ReadCounter(app, patch)
        report = pipeline.process_lines(lines(usage(already)), "test")
        assert report.accepted == 1
        recording = counter.events
        counter.events = 0
        run = BillingRuns(app, lambda: datetime.now(UTC)).run(date(2026, 11, 1))
        pricing = counter.events
    [invoice] = run.invoices
    return recording, pricing, str(invoice.total)


def test_costs_do_not_grow_with_the_usage_already_recorded(
    app: BillingApplication, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = cost_of_one_more_event_and_an_invoice(app, monkeypatch, already=20)
    other = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 'w.db'}"))
    try:
        large = cost_of_one_more_event_and_an_invoice(other, monkeypatch, already=3000)
    finally:
        other.close()
    assert small[2] == "0.02" and large[2] == "3.00"  # every event priced, exactly
    assert (small[0], small[1]) == (large[0], large[1])  # but no more read for 150x the usage
    assert small[1] > 0  # the counter does see what pricing reads (the contract, the run)
