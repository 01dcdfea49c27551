"""A store a later billcycle wrote is refused, not billed from data this version cannot read."""

from __future__ import annotations

from infra.store.store_format import STORE_FORMAT
from tests.e2e.cli import billcycle
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
