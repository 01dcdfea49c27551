"""A watermark sent without `source` while the metric's named source lags (QA14 M1): ingest
says it did not take effect and why, the hold names the source behind, and the watermark of
that source releases the invoice."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.cli import billcycle, billcycle_json
from tests.e2e.test_cli_billing import API, contract, usage, watermark
from tests.e2e.test_unbilled_usage import ingest


def test_a_hold_names_the_lagging_source_and_ingest_says_a_watermark_did_not_take_effect(
    db: str, tmp_path: Path
) -> None:
    metering = {**watermark("w-1", "api_calls", "2026-10-28T00:00:00Z"), "source": "metering"}
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API),
           usage("u-1", "cus_ct_a", "api_calls", "3500", "2026-10-03T10:00:00Z"), metering)
    batch = billcycle_json(db, "run", "--cycle-date", "2026-11-01")["batch_id"]

    unnamed = watermark("w-2", "api_calls", "2026-11-02T00:00:00Z")  # as contract.md shows it
    said = billcycle_json(db, "ingest", "-", stdin=f"{json.dumps(unnamed)}\n".encode())
    assert said["accepted"] == 1 and len(said["notes"]) == 1
    assert said["notes"][0].startswith(
        "usage.watermark w-2: api_calls stays complete only before 2026-10-28T00:00:00+00:00, "
        "the watermark of source `metering`, not through 2026-11-02T00:00:00+00:00")

    held = billcycle_json(db, "retry", batch)["held"]
    assert [h["contract_id"] for h in held] == ["ct_a"]
    assert ("its watermark 2026-10-28T00:00:00+00:00 from source `metering` (the slowest of its "
            "2 sources; (unnamed) is at 2026-11-02T00:00:00+00:00)") in held[0]["reason"]
    assert "complete_through >= 2026-11-01T00:00:00+00:00 with source `metering`" in (
        held[0]["reason"])
    shown = billcycle(db, "batch", "show", batch).stdout
    assert "api_calls 2026-10-28T00:00:00+00:00 (source `metering`, the slowest of 2)" in shown

    caught_up = {**watermark("w-3", "api_calls", "2026-11-02T00:00:00Z"), "source": "metering"}
    assert billcycle_json(db, "ingest", "-", stdin=f"{json.dumps(caught_up)}\n".encode())[
        "notes"] == []
    assert billcycle_json(db, "retry", batch)["counts"]["held"] == 0
    assert billcycle(db, "batch", "verify", batch).returncode == 0
