"""A batch retried after a later cycle date was billed: `batch show` gives the next due date
the contract has once the later batch billed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.cli import Result, billcycle, billcycle_json
from tests.e2e.test_cli_billing import API, PLATFORM, STORAGE, contract, usage, watermark
from tests.e2e.test_unbilled_usage import ingest


def late_retry(db: str, tmp_path: Path) -> tuple[dict[str, Any], Result]:
    """November's batch, retried after December's: November's run, and the retry's output."""
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_plain", PLATFORM),
           contract("ct_api", PLATFORM, API),
           contract("ct_storage", STORAGE),
           usage("u-1", "cus_ct_api", "api_calls", "3500", "2026-10-03T10:00:00Z"),
           usage("u-2", "cus_ct_storage", "storage_gb", "70", "2026-10-20T10:00:00Z"),
           watermark("w-1", "api_calls", "2026-10-25T00:00:00Z"),
           watermark("w-2", "storage_gb", "2026-10-25T00:00:00Z"))
    # November: both usage contracts are held, their metrics lagging.
    november = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert [h["contract_id"] for h in november["held"]] == ["ct_api", "ct_storage"]
    # api_calls catches up before December's run, which bills ct_api; storage still lags.
    ingest(db, tmp_path, "api.jsonl", watermark("w-3", "api_calls", "2026-12-01T00:00:00Z"))
    december = billcycle_json(db, "run", "--cycle-date", "2026-12-01", "--batch-id", "dec")
    assert december["counts"]["invoiced"] == 2
    ingest(db, tmp_path, "storage.jsonl",
           watermark("w-4", "storage_gb", "2026-12-01T00:00:00Z"))
    return november, billcycle(db, "--json", "retry", "nov")


def test_batch_show_next_due_after_a_later_batch(db: str, tmp_path: Path) -> None:
    late_retry(db, tmp_path)
    # ct_api, which December's batch billed through 2027-01-01 (in advance) and 2026-12-01
    # (usage) before the retry, is next due 2027-01-01, not at November's period end.
    shown = billcycle_json(db, "batch", "show", "nov")
    api = next(c for c in shown["contracts"] if c["contract_id"] == "ct_api")
    assert (api["outcome"], api["next_due"]) == ("not_due", "2027-01-01")
    text = billcycle(db, "batch", "show", "nov").stdout
    assert "next due 2027-01-01 (as of the attempt that decided it)" in text
    assert "all identical" in billcycle(db, "batch", "verify", "nov").stdout
