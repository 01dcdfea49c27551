"""Billing runs racing, crashing and resuming on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from domain.application import BillingApplication
from infra.store.url import store_env
from tests.integration.book import many_contracts

CONTRACTS = 240


def start_run(db: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "--db", db, "run", "--cycle-date", "2026-11-01",
         "--chunk-size", "10", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def ingest(db: str, tmp_path: Path) -> None:
    book = tmp_path / "book.jsonl"
    book.write_bytes(many_contracts(CONTRACTS))
    subprocess.run([sys.executable, "-m", "infra.cli", "--db", db, "ingest", str(book)],
                   check=True, capture_output=True)


def assert_billed_exactly_once(db: str) -> None:
    app = BillingApplication(env=store_env(db))
    try:
        invoices = list(app.invoices())
        per_contract = Counter(i.contract_id for i in invoices)
        # October in advance, plus November in advance and October's usage: one invoice,
        # for every contract, whichever run issued it.
        assert len(per_contract) == CONTRACTS
        assert set(per_contract.values()) == {1}
        assert [i.number for i in invoices] == [
            f"INV-{n:06d}" for n in range(1, len(invoices) + 1)]
        assert app.issued_count() == len(invoices)
        for invoice in invoices:
            kinds = sorted(line["kind"] for line in invoice.lines)
            assert kinds == ["subscription", "subscription", "usage"], invoice.number
    finally:
        app.close()


def test_two_runs_started_together_bill_every_invoice_once(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    ingest(fresh_pg_url, tmp_path)
    first, second = start_run(fresh_pg_url), start_run(fresh_pg_url)
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    assert_billed_exactly_once(fresh_pg_url)
    # Each batch verifies: what one found nothing due for because the other invoiced it
    # meanwhile is listed apart, not as a difference (QA: verify said DIFFERENT, exit 1).
    verified = [verify(fresh_pg_url, batch["batch_id"]) for batch in cli_json(
        fresh_pg_url, "batch", "list")]
    assert len(verified) == 2 and all(v["identical"] for v in verified), verified
    assert sum(v["invoices"] for v in verified) == CONTRACTS
    for v, other in zip(verified, reversed(verified), strict=True):
        assert {b["batch_id"] for b in v["billed_elsewhere"]} <= {other["batch_id"]}


def test_two_runs_of_one_batch_id_at_once_bill_once_and_the_batch_says_what_it_billed(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    # QA (helper-25, F5 and F6): the process finding contracts billed by the other recorded
    # them as nothing due over the other's "invoiced", so batch show undercounted the batch
    # and verify said DIFFERENT; a conflict on the batch's own events was a traceback.
    ingest(fresh_pg_url, tmp_path)
    first = start_run(fresh_pg_url, "--batch-id", "Y")
    time.sleep(0.3)
    second = start_run(fresh_pg_url, "--batch-id", "Y")
    for process in (first, second):
        _, err = process.communicate(timeout=300)
        said = err.decode()
        assert process.returncode == 0 or (
            "was written by another process at the same moment" in said
            and said.count("\n") == 1), said
    assert_billed_exactly_once(fresh_pg_url)
    shown = cli_json(fresh_pg_url, "batch", "show", "Y")
    invoiced = [o for o in shown["contracts"] if o["outcome"] == "invoiced"]
    assert len(invoiced) == CONTRACTS, shown["counts"]
    verified = verify(fresh_pg_url, "Y")
    assert verified["identical"]
    # Each contract once, whatever attempts decided it (QA: the attempts' outcomes added up).
    assert verified["contracts"] == shown["counts"]["contracts"] == CONTRACTS, verified
    assert verified["outcomes"]["invoiced"] == CONTRACTS


def cli_json(db: str, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "infra.cli", "--db", db, "--json", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def verify(db: str, batch_id: str) -> dict[str, Any]:
    found: dict[str, Any] = cli_json(db, "batch", "verify", batch_id)
    return found


def test_a_run_killed_halfway_then_run_again_bills_everything_once(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    ingest(fresh_pg_url, tmp_path)
    app = BillingApplication(env=store_env(fresh_pg_url))
    try:
        doomed = start_run(fresh_pg_url, "--batch-id", "doomed")
        deadline = time.monotonic() + 120
        while app.issued_count() < CONTRACTS // 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        issued_at_kill = app.issued_count()
        assert 0 < issued_at_kill < CONTRACTS, "the kill should land mid-run"
    finally:
        app.close()

    # The operator runs the cycle again, then resumes the killed batch too.
    rerun = start_run(fresh_pg_url)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    resumed = start_run(fresh_pg_url, "--batch-id", "doomed")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    assert_billed_exactly_once(fresh_pg_url)
