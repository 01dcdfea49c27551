"""`python -m infra.sample_book --kafka` puts the book on the inbound topics as producers would
(QA 15, L5: the README had no way to): consumed, it bills as the same book ingested from its
file does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.kafka_support import billcycle, billcycle_json, cli_env, new_topics

BOOK = ("--contracts", "24", "--events", "3")
CYCLE = "2026-12-01"


def _bill(env: dict[str, str]) -> dict[str, Any]:
    report = billcycle_json(env, "run", "--cycle-date", CYCLE, "--batch-id", "B-1")
    return {"counts": report["counts"], "held": report["held"],
            "invoices": [(i["number"], i["contract_id"], i["total"])
                         for i in billcycle_json(env, "invoices")]}


def test_the_sample_book_put_on_kafka_bills_as_the_book_ingested(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    topics = new_topics(kafka_bootstrap)
    on_kafka = {**cli_env(f"sqlite:///{tmp_path / 'kafka.db'}", kafka_bootstrap, topics),
                "BILLCYCLE_TODAY": CYCLE}
    put = subprocess.run([sys.executable, "-m", "infra.sample_book", *BOOK,
                          "--kafka", kafka_bootstrap], env=on_kafka, capture_output=True,
                         text=True, timeout=120, check=True)
    assert f"records put on {topics.contracts}" in put.stderr, put.stderr
    billcycle(on_kafka, "consume", "--until-caught-up")

    book = tmp_path / "book.jsonl"
    from_file = {**on_kafka, "BILLCYCLE_DB": f"sqlite:///{tmp_path / 'file.db'}"}
    subprocess.run([sys.executable, "-m", "infra.sample_book", *BOOK, "--out", str(book)],
                   env=from_file, capture_output=True, check=True, timeout=120)
    billcycle(from_file, "ingest", str(book))

    billed = _bill(on_kafka)
    assert billed["counts"]["invoiced"] > 0
    assert billed == _bill(from_file)
    assert (len(billcycle_json(on_kafka, "deadletters"))
            == len(billcycle_json(from_file, "deadletters")))
