"""A batch retried after a later cycle date was billed: the retry says what it did apart from
what the batch holds, warns that its invoices are dated before the later batch, and `batch
show` gives the next due date the contract has once the later batch billed it."""

from __future__ import annotations

import json
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


def test_a_retry_counts_what_it_did_apart_from_the_batch(db: str, tmp_path: Path) -> None:
    november, said = late_retry(db, tmp_path)
    document = json.loads(said.stdout)
    # What this retry did, apart from what the batch now holds: a run's and its retries'
    # counts add up to the batch (QA: a retry that issued 12 said "invoiced 190").
    assert document["attempt"] == "retry"
    assert document["counts"] == {"contracts": 2, "invoiced": 1, "held": 0, "failed": 0,
                                  "not_due": 1}
    assert document["batch_counts"] == {"contracts": 3, "invoiced": 2, "held": 0, "failed": 0,
                                        "not_due": 1}
    assert november["counts"]["invoiced"] + document["counts"]["invoiced"] \
        == document["batch_counts"]["invoiced"]
    [storage] = billcycle_json(db, "invoices", "--contract", "ct_storage")
    assert document["invoices"] == [storage["invoice_id"]]
    assert document["invoice_numbers"] == [storage["number"]] == ["INV-000004"]
    # ct_api, which December's batch billed: no advice to check a --cycle-date it has not.
    [later] = [w for w in document["warnings"] if "already billed for a later" in w]
    assert later.endswith("this one bills little or nothing for them; a retry keeps its "
                          "batch's cycle date: expected where a later batch billed what this "
                          "one held")
    # The text labels the retry's figures and the batch's apart.
    again = billcycle(db, "retry", "nov").stdout
    assert again.startswith("retry of batch nov for cycle date 2026-11-01\n"
                            "  nothing to retry: batch nov held and failed no contract (the "
                            "retry is kept among its attempts)\n"
                            "  batch nov now holds: contracts 3: invoiced 2, held 0, failed 0, "
                            "not due 1\n")


def test_a_retry_after_a_later_batch_says_its_invoices_are_back_dated(
    db: str, tmp_path: Path
) -> None:
    _, said = late_retry(db, tmp_path)
    document = json.loads(said.stdout)
    [storage] = billcycle_json(db, "invoices", "--contract", "ct_storage")
    # Issued on the batch's cycle date, after the 2026-12-01 batch: said on stderr and in the
    # document, with what it changes (QA: reports of past dates moved with no marker).
    assert (storage["number"], storage["issue_date"]) == ("INV-000004", "2026-11-01")
    assert document["backdated"] == {
        "issue_date": "2026-11-01", "invoices": ["INV-000004"],
        "later_batches": [{"batch_id": "dec", "cycle_date": "2026-12-01"}],
        "reports_changed_from": "2026-11-01",
        "reports_changed": ["report revenue", "report ar-aging", "collections",
                            "export beancount"]}
    assert said.stderr.startswith("billcycle retry: warning: back-dated: 1 invoice(s) of this "
                                  "retry (INV-000004) are issued on 2026-11-01")
    assert "after batch dec (2026-12-01) of a later cycle date had run" in said.stderr
    assert "reports as of 2026-11-01 or later change" in said.stderr
    assert any(w.startswith("back-dated: ") for w in document["warnings"])
    # A run of the latest date, or a retry issuing nothing, has nothing to say.
    assert billcycle_json(db, "run", "--cycle-date", "2027-01-01")["backdated"] is None
    quiet = billcycle(db, "--json", "retry", "nov")
    assert json.loads(quiet.stdout)["backdated"] is None and "back-dated" not in quiet.stderr


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


def test_a_retry_says_what_it_issued_and_when_there_was_nothing_to_retry(
    db: str, tmp_path: Path
) -> None:
    # QA L1: a retry that issued nothing said it "settled the contracts and issued the
    # invoices above".
    ingest(db, tmp_path, "book.jsonl", contract("ct_plain", PLATFORM),
           contract("ct_storage", STORAGE),
           usage("u-1", "cus_ct_storage", "storage_gb", "70", "2026-10-20T10:00:00Z"),
           watermark("w-1", "storage_gb", "2026-10-25T00:00:00Z"))
    billcycle(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    still = billcycle(db, "retry", "nov").stdout  # the metric still lags: held again
    assert ("  this retry: contracts 1: invoiced 0, held 1, failed 0, not due 0\n"
            "  batch nov now holds: contracts 2: invoiced 1, held 1, failed 0, not due 0 (this "
            "retry decided 1 of them and issued no invoice; earlier attempts or another "
            "process on this batch id the rest)\n") in still
    ingest(db, tmp_path, "caught_up.jsonl",
           watermark("w-2", "storage_gb", "2026-11-01T00:00:00Z"))
    assert "(this retry decided 1 of them and issued 1 invoice; earlier attempts" in \
        billcycle(db, "retry", "nov").stdout
    # Nothing left: said so. The attempt is kept, so that the batch's record shows the retry
    # that was asked for and found nothing (an auditor reads who did what, and when).
    attempts = len(billcycle_json(db, "batch", "show", "nov")["attempts"])
    nothing = billcycle(db, "retry", "nov").stdout
    assert ("  nothing to retry: batch nov held and failed no contract (the retry is kept "
            "among its attempts)\n  batch nov now holds: contracts 2: invoiced 2, held 0, "
            "failed 0, not due 0\n") in nothing
    assert "issued" not in nothing
    assert len(billcycle_json(db, "batch", "show", "nov")["attempts"]) == attempts + 1
