"""An input position is applied once: the second attempt is refused at once, not retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication, ConcurrentUpdate
from domain.commands import Origin
from infra.store.url import store_env

USAGE = (b'{"type": "usage", "id": "u-1", "occurred_at": "2026-10-01T00:00:00Z",'
         b' "customer_id": "cus_1", "metric": "api_calls", "quantity": "1"}')


def test_a_batch_whose_position_is_already_recorded_is_refused(tmp_path: Path) -> None:
    app = BillingApplication(env=store_env(f"sqlite:///{tmp_path / 't.db'}"))
    try:
        pipeline = IngestPipeline(app)
        origin = Origin("kafka:billing.usage/0", "offset 7", USAGE)
        assert pipeline.process([origin], Tracking("kafka:billing.usage:0", 7)).accepted == 1
        with pytest.raises(ConcurrentUpdate, match="already recorded"):
            pipeline.process([origin], Tracking("kafka:billing.usage:0", 7))
        recorder: Any = app.recorder
        assert recorder.max_tracking_id("kafka:billing.usage:0") == 7
    finally:
        app.close()
