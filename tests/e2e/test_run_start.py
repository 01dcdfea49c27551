"""A billing run says its batch id as it starts, and the next run names a batch left unfinished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.cli import billcycle, billcycle_json
from tests.integration.book import many_contracts


def test_a_killed_run_had_said_its_batch_id_and_the_next_run_names_it(
    db: str, tmp_path: Path
) -> None:
    # QA12 F4: a killed run printed nothing, and the next plain run opened a new batch
    # without a word about it.
    book = tmp_path / "book.jsonl"
    book.write_bytes(many_contracts(100, usage_per_contract=0))
    billcycle(db, "ingest", str(book))
    doomed = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "--db", db, "--json", "run", "--cycle-date",
         "2026-11-01", "--batch-id", "doomed", "--chunk-size", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert doomed.stderr is not None
    said = doomed.stderr.readline()  # written as the batch starts: then it is killed
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    resume = "`billcycle run --cycle-date 2026-11-01 --batch-id doomed`"
    assert "billcycle run: batch doomed for cycle date 2026-11-01 started" in said, said
    assert resume in said

    for dry in (["--dry-run"], []):
        ran = billcycle(db, "--json", "run", "--cycle-date", "2026-11-01", *dry)
        document = json.loads(ran.stdout)  # one document on stdout; the start line on stderr
        assert document["unfinished_batches"] == ["doomed"]
        [warning] = [w for w in document["warnings"] if "doomed" in w]
        assert "batch doomed of cycle date 2026-11-01" in warning and resume in warning
        if dry:
            assert ran.stderr == ""  # a dry run starts no batch
        else:
            [line] = ran.stderr.splitlines()
            assert f"batch {document['batch_id']} for cycle date 2026-11-01 started" in line
            # Said at the start too (QA13): a run killed before its summary named them not.
            assert line.endswith("other batches of this cycle date never finished: doomed "
                                 "(the summary says how to finish them)"), line

    resumed = billcycle(db, "--json", "run", "--cycle-date", "2026-11-01", "--batch-id",
                        "doomed")
    assert "batch doomed for cycle date 2026-11-01 resumed (attempt 2)" in resumed.stderr
    assert json.loads(resumed.stdout)["unfinished_batches"] == []
    listed = billcycle_json(db, "batch", "list")
    assert all(b["finished_at"] for b in listed), listed
