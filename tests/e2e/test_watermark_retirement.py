"""A watermark source that will send no more (a test producer that sent one watermark) held
its metric's invoices for good: the operator retires it, the retry bills them, and every batch
verifies identically whether it began before or after the retirement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.billing_runs import BillingRuns
from tests.e2e.cli import billcycle, billcycle_json
from tests.e2e.test_cli_billing import API, contract, usage, watermark
from tests.e2e.test_unbilled_usage import ingest


def sent(mid: str, through: str, source: str) -> dict[str, Any]:
    return {**watermark(mid, "api_calls", through), "source": source}


def test_retiring_a_stale_source_releases_what_it_held_and_batches_verify_the_same(
    db: str, tmp_path: Path
) -> None:
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API),
           usage("u-1", "cus_ct_a", "api_calls", "3500", "2026-10-03T10:00:00Z"),
           sent("w-1", "2026-11-02T00:00:00Z", "metering"),
           sent("w-qa", "2026-10-20T00:00:00Z", "qa-load-test"))
    batch = billcycle_json(db, "run", "--cycle-date", "2026-11-01")["batch_id"]
    (held,) = billcycle_json(db, "batch", "show", batch)["contracts"]
    assert "with source `qa-load-test` (or, if source `qa-load-test` will send no more, retire " \
        "it: `billcycle watermarks retire --metric api_calls --source qa-load-test --reason " \
        "...`), then run `billcycle retry` for this batch" in held["reason"]

    # Refused, each with what to do instead; nothing recorded.
    for args, said in (
            (("--metric", "api_call", "--source", "qa-load-test", "--reason", "x"),
             "no watermark of metric api_call has been received"),
            (("--metric", "api_calls", "--source", "qa", "--reason", "x"),
             "api_calls has no watermark source `qa` (its sources: `metering`, `qa-load-test`)"),
            (("--metric", "api_calls", "--source", "qa-load-test", "--reason", " "),
             "give the reason the source is retired")):
        refused = billcycle(db, "watermarks", "retire", *args, check=False)
        assert refused.returncode == 1 and said in refused.stderr

    retired = billcycle_json(db, "watermarks", "retire", "--metric", "api_calls", "--source",
                             "qa-load-test", "--reason", "load test producer, not metering",
                             "--by", "ann")
    assert retired["recorded"] and retired["active_sources"] == ["metering"]
    assert retired["metric_complete_through"] == "2026-11-02T00:00:00+00:00"
    again = billcycle(db, "watermarks", "retire", "--metric", "api_calls", "--source",
                      "qa-load-test", "--reason", "again").stdout
    assert "is already retired" in again and "nothing recorded" in again

    (listed,) = billcycle_json(db, "watermarks")
    assert listed["complete_through"] == "2026-11-02T00:00:00+00:00"
    assert [(s["source"], s["active"], (s["retired"] or {}).get("by"))
            for s in listed["sources"]] == [("metering", True, None),
                                            ("qa-load-test", False, "ann")]

    assert billcycle_json(db, "retry", batch)["counts"]["invoiced"] == 1
    later = billcycle_json(db, "run", "--cycle-date", "2026-12-01")["batch_id"]
    manifest = billcycle_json(db, "batch", "show", later)["attempts"][0]["manifest"]
    assert list(manifest["retired_watermark_sources"]["api_calls"]) == ["qa-load-test"]
    assert "qa-load-test" in manifest["watermark_sources"]["api_calls"]  # its mark, kept
    for each in (batch, later):  # begun before and after the retirement
        verified = billcycle_json(db, "batch", "verify", each)
        assert verified["differences"] == [], verified["differences"]

    # The retired source sends again: it is active again, and ingest says so.
    back = sent("w-qa-2", "2026-10-21T00:00:00Z", "qa-load-test")
    notes = billcycle_json(db, "ingest", "-", stdin=f"{json.dumps(back)}\n".encode())["notes"]
    assert len(notes) == 1 and "so it is active again and bounds api_calls" in notes[0]
    assert billcycle_json(db, "watermarks")[0]["complete_through"] == "2026-10-21T00:00:00+00:00"


def test_a_batch_begun_before_sources_could_be_retired_still_verifies(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API),
           usage("u-1", "cus_ct_a", "api_calls", "3500", "2026-10-03T10:00:00Z"),
           sent("w-1", "2026-11-02T00:00:00Z", "metering"),
           sent("w-qa", "2026-10-20T00:00:00Z", "qa-load-test"))
    recorded = BillingRuns._manifest

    def as_before(runs: BillingRuns) -> dict[str, Any]:  # the manifest earlier versions made
        manifest = recorded(runs)
        del manifest["retired_watermark_sources"]
        return manifest

    with monkeypatch.context() as patched:
        patched.setattr(BillingRuns, "_manifest", as_before)
        batch = billcycle_json(db, "run", "--cycle-date", "2026-11-01")["batch_id"]
    (held,) = billcycle_json(db, "batch", "show", batch)["contracts"]
    assert "retire" not in held["reason"]  # as it read then

    billcycle(db, "watermarks", "retire", "--metric", "api_calls", "--source", "qa-load-test",
              "--reason", "load test producer")
    assert billcycle_json(db, "retry", batch)["counts"]["invoiced"] == 1
    assert billcycle_json(db, "batch", "verify", batch)["differences"] == []
