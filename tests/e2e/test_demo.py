"""`billcycle demo`: the sample book billed end to end, every contract accounted for."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.sample_book import LAGGING_METRIC

CONTRACTS = 60


def demo(
    cwd: Path, *args: str, check: bool = True, store: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`billcycle demo ARGS` in `cwd`, as an operator runs it, with BILLCYCLE_DB=store."""
    env = {k: v for k, v in os.environ.items() if k != "BILLCYCLE_DB"}
    if store is not None:
        env["BILLCYCLE_DB"] = store
    result = subprocess.run([sys.executable, "-m", "infra.cli", "demo", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"billcycle demo {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("demo")
    result = demo(cwd, "--json", "--contracts", str(CONTRACTS), "--events", "10")
    assert (cwd / "billcycle-demo.db").exists()
    document: dict[str, Any] = json.loads(result.stdout)  # one JSON document, nothing else
    return document


def test_every_contract_is_invoiced_held_failed_or_not_due(report: dict[str, Any]) -> None:
    run = report["run"]
    counts = run["counts"]
    assert counts["contracts"] == CONTRACTS
    assert counts["invoiced"] + counts["held"] + counts["failed"] + counts["not_due"] == CONTRACTS
    assert run["invoices"] == counts["invoiced"] > 0
    assert len(run["held"]) == counts["held"]
    assert len(run["failed"]) == counts["failed"]
    assert len(run["not_due"]) == counts["not_due"] > 0
    assert sum(t["invoices"] for t in run["totals"].values()) == counts["invoiced"]
    assert report["dry_run"]["counts"] == counts  # the dry run foresaw the run


def test_contracts_of_the_lagging_metric_are_held_with_a_reason_naming_it(
    report: dict[str, Any]
) -> None:
    held = report["run"]["held"]
    assert held
    for outcome in held:
        assert LAGGING_METRIC in outcome["reason"]
        assert "watermark" in outcome["reason"]


def test_usage_no_contract_bills_is_named_not_dropped(report: dict[str, Any]) -> None:
    # ct_0015 was terminated; ct_0024 left the API plan mid-period while still sending usage.
    warnings = " | ".join(report["run"]["warnings"])
    assert "cus_0015 outside the service" in warnings
    assert "cus_0024 in periods that no contract of theirs bills it for" in warnings
    assert "the terms of ct_0024 at the end of those periods do not price it" in warnings


def test_rejected_messages_come_with_reasons(report: dict[str, Any]) -> None:
    ingest = report["ingest"]
    rejected = ingest["rejected"]
    assert len(rejected) == 6
    assert all(r["reason"] and r["position"].startswith("line ") for r in rejected)
    reasons = " | ".join(r["reason"] for r in rejected)
    for expected in ("not JSON", "negative", "XYZ", "tiers must ascend", "unknown contract",
                     "conflicting duplicate"):
        assert expected in reasons
    assert ingest["duplicates"] > 0
    messages = sum(p["messages"] for p in ingest["parts"])
    assert ingest["accepted"] + ingest["duplicates"] + len(rejected) == messages


def test_numbers_continue_gapless_from_the_previous_cycle(report: dict[str, Any]) -> None:
    previous_last = int(report["previous_run"]["numbers"][1].removeprefix("INV-"))
    first, last = (int(n.removeprefix("INV-")) for n in report["run"]["numbers"])
    assert first == previous_last + 1
    assert last - first + 1 == report["run"]["invoices"]


def test_the_examples_show_the_kinds_of_line(report: dict[str, Any]) -> None:
    kinds = {line["kind"] for invoice in report["examples"] for line in invoice["lines"]}
    assert {"subscription", "usage", "proration", "late_usage", "milestone",
            "minimum_true_up"} <= kinds
    for invoice in report["examples"]:
        assert sum(float(v) for v in invoice["subtotals"].values()) == pytest.approx(
            float(invoice["total"]))


def test_running_the_cycle_date_again_bills_nothing(report: dict[str, Any]) -> None:
    rerun = report["rerun"]
    assert rerun["counts"]["contracts"] == CONTRACTS
    assert rerun["counts"]["invoiced"] == 0
    assert rerun["issued_after"] == rerun["issued_before"]


def test_the_text_report_ends_with_commands_to_explore(tmp_path: Path) -> None:
    first = demo(tmp_path, "--contracts", "20", "--events", "4").stdout
    again = demo(tmp_path, "--contracts", "20", "--events", "4").stdout  # replaces the store
    for out in (first, again):
        assert "nothing billed twice" in out
        assert "billcycle --db sqlite:///billcycle-demo.db batch show B-20261201-" in out


def test_a_store_named_with_db_must_be_empty_and_billcycle_db_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'mine.db'}"
    line = json.dumps({"type": "usage.watermark", "id": "w1", "occurred_at": "2026-11-01T00:00:00Z",
                       "metric": "api_calls", "complete_through": "2026-11-01"})
    subprocess.run([sys.executable, "-m", "infra.cli", "--db", store, "ingest", "-"],
                   input=line, text=True, check=True, capture_output=True)
    result = demo(tmp_path, "--db", store, check=False)
    assert result.returncode == 1
    assert "is not empty" in result.stderr
    assert result.stdout == ""
    # The everyday store of BILLCYCLE_DB is left alone: the demo makes its own.
    demo(tmp_path, "--contracts", "5", "--events", "2", store=store)
    assert (tmp_path / "billcycle-demo.db").exists()
    # Its help says so of --db too (QA: it gave everyday commands' default and BILLCYCLE_DB).
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps help at hyphens too
    helped = " ".join(demo(tmp_path, "--help").stdout.split())
    assert ("--db DB an empty store to run the demo in: sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DB (default sqlite:///billcycle-demo.db "
            "here, replaced on each run; BILLCYCLE_DB is not used)") in helped
    assert "default sqlite:///billcycle.db" not in helped


def test_the_demo_runs_on_postgresql_as_on_the_embedded_store(
    tmp_path: Path, fresh_pg_url: str, report: dict[str, Any]
) -> None:
    on_postgres = json.loads(demo(tmp_path, "--json", "--db", fresh_pg_url, "--contracts",
                                  str(CONTRACTS), "--events", "10").stdout)
    assert not (tmp_path / "billcycle-demo.db").exists()
    for part in ("previous_run", "run", "rerun"):
        assert on_postgres[part]["counts"] == report[part]["counts"]
    assert on_postgres["run"]["totals"] == report["run"]["totals"]
    assert on_postgres["run"]["warnings"] == [
        w.replace(report["run"]["batch_id"], on_postgres["run"]["batch_id"])
        for w in report["run"]["warnings"]]
    assert on_postgres["rerun"]["issued_after"] == on_postgres["rerun"]["issued_before"]


def test_the_suggested_acknowledgement_quiets_the_usage_after_a_termination(
    tmp_path: Path
) -> None:
    document = json.loads(demo(tmp_path, "--json", "--contracts", "20", "--events", "4").stdout)
    [command] = [c for c in document["explore"] if " usage acknowledge " in c]
    args = shlex.split(command)
    assert args[0].endswith("billcycle") and "cus_0015" in args
    subprocess.run([sys.executable, "-m", "infra.cli", *args[1:]], cwd=tmp_path, check=True,
                   capture_output=True)
    assert any("cus_0015 outside the service" in w for w in document["run"]["warnings"])
    dry = subprocess.run([sys.executable, "-m", "infra.cli", "--db", "sqlite:///billcycle-demo.db",
                          "--json", "run", "--cycle-date", "2026-12-01", "--dry-run"],
                         cwd=tmp_path, check=True, capture_output=True, text=True)
    assert not any("cus_0015" in w for w in json.loads(dry.stdout)["warnings"])
