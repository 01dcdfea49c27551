"""A store a later billcycle wrote is refused, not billed from data this version cannot read;
a store an earlier billcycle wrote is upgraded at its first open, which says so once."""

from __future__ import annotations

from pathlib import Path

from infra.store.store_format import STORE_FORMAT, UPGRADING
from tests.e2e.cli import billcycle, jsonl
from tests.e2e.test_cli_billing import contract
from tests.e2e.test_uncounted_values import USERS, seen
from tests.store_sql import on_store


def test_a_store_a_later_billcycle_wrote_is_refused_with_what_to_do(db: str) -> None:
    billcycle(db, "ingest", "-", stdin=b"")  # the store made, its format recorded
    billcycle(db, "invoices")  # opened again by the same version: fine
    on_store(db, f"UPDATE billcycle_store_format SET version = {STORE_FORMAT + 1}")

    for command in (("invoices",), ("run", "--cycle-date", "2026-12-01")):
        refused = billcycle(db, *command, check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, command
        assert (f"this store was written by a later billcycle (store format {STORE_FORMAT + 1}"
                f"; this version reads format {STORE_FORMAT} and earlier)") in refused.stderr
        assert "restore the backup taken before the upgrade" in refused.stderr


def test_the_first_open_of_a_store_from_before_the_format_says_it_reads_its_usage_once(
    db: str, tmp_path: Path
) -> None:
    # QA: that first open read all the stored usage, silently: on a large store, a command
    # that hung for no reason it gave.
    usage = tmp_path / "october.jsonl"
    usage.write_bytes(jsonl(contract("ct_u", USERS), seen("u-1", "2026-10-04T10:00:00Z", user=1.5),
                            seen("u-2", "2026-10-05T10:00:00Z", user="alice")))
    made = billcycle(db, "ingest", str(usage))
    assert UPGRADING not in made.stderr  # a new store has no usage to read
    on_store(db, "DELETE FROM billcycle_store_format")  # as the billcycle before the format left it

    first = billcycle(db, "invoices")
    later = [billcycle(db, "invoices"), billcycle(db, "deadletters")]

    assert first.stderr.splitlines() == [UPGRADING]
    assert "reading all its stored usage once" in UPGRADING
    assert all(UPGRADING not in opened.stderr for opened in later)
