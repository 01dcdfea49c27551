"""A cycle date far after today is billed, as contract.md allows any D, but said loudly: a
year ahead is nearly always a typo, and issued invoices are taken back only by credit notes."""

from __future__ import annotations

import json

import pytest

from infra.cli import TODAY_ENV
from tests.e2e.cli import billcycle, jsonl
from tests.e2e.test_cli_billing import PLATFORM, contract


def test_a_cycle_date_more_than_a_month_ahead_is_warned_of(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # QA M4: `run --cycle-date 2027-12-01 --dry-run` (2027 for 2026) would bill a year of
    # in-advance periods without a word.
    monkeypatch.setenv(TODAY_ENV, "2026-11-29")
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_a", PLATFORM)))
    said = billcycle(db, "--json", "run", "--cycle-date", "2027-12-01", "--dry-run")
    warning = ("cycle date 2027-12-01 is 367 days after today (2026-11-29 UTC): the 1 "
               "invoice(s) of this run would be issued on 2027-12-01, billing in advance every "
               "in_advance period starting by 2027-12-01 and every in_arrears period and "
               "milestone ending by then, as though those days had come; check --cycle-date "
               "before running it without --dry-run")
    assert f"billcycle run: warning: {warning}\n" in said.stderr
    assert warning in json.loads(said.stdout)["warnings"]
    text = billcycle(db, "run", "--cycle-date", "2027-12-01", "--dry-run").stdout
    assert f"  warning: {warning}\n" in text
    # The next cycle run a month early is routine: 31 days ahead is not warned of, 32 is.
    assert "after today" not in billcycle(
        db, "run", "--cycle-date", "2026-12-30", "--dry-run").stderr
    issued = billcycle(db, "run", "--cycle-date", "2026-12-31").stderr
    assert ("cycle date 2026-12-31 is 32 days after today (2026-11-29 UTC): the 1 invoice(s) "
            "of this run are issued on 2026-12-31") in issued
    assert issued.rstrip().endswith("if the date is a typo, they are reversed only by credit "
                                    "notes")
