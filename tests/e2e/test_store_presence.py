"""Only the commands that bring input make a store. Any other, given a database that holds no
billcycle store (a typo of the real one, PostgreSQL's maintenance database), refuses in a line
and makes nothing there, rather than answer "No open receivables" from an empty store."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.store.store_format import STORE_FORMAT
from tests.e2e.cli import billcycle, billcycle_process, jsonl
from tests.integration.indexed_topics import index_name, indexed
from tests.store_sql import on_store

AS_OF = "2026-12-01"
# Every command that reads a store or adds to one, with the arguments it needs.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("report", "ar-aging", "--as-of", AS_OF),
    ("report", "revenue", "--as-of", AS_OF),
    ("report", "usage-without-contract"),
    ("invoices",),
    ("batch", "list"),
    ("batch", "show", "B-1"),
    ("batch", "verify", "B-1"),
    ("explain", "INV-000001"),
    ("deadletters",),
    ("collections", "--as-of", AS_OF, "--record"),
    ("run", "--cycle-date", AS_OF),
    ("retry", "B-1"),
    ("project",),
    ("replay",),
    ("export", "beancount"),
    ("publish", "--bootstrap", "127.0.0.1:9", "--until-caught-up"),
    ("watermarks",),
    ("watermarks", "retire", "--metric", "m", "--source", "s", "--reason", "gone"),
    ("usage", "acknowledged"),
    ("usage", "acknowledge", "--customer", "c", "--metric", "m", "--through", AS_OF,
     "--reason", "seen"),
    ("usage", "assigned"),
)


def _no_store_made(db: str) -> None:
    """Nothing left behind: no file for SQLite, no table in the PostgreSQL database."""
    if db.startswith("sqlite"):
        assert not Path(db.removeprefix("sqlite:///")).exists()
    else:
        assert on_store(db, "SELECT count(*) FROM pg_catalog.pg_tables"
                            " WHERE schemaname = 'public'") == (0,)


def test_commands_that_bring_no_input_refuse_a_database_without_a_store(db: str) -> None:
    where = db if db.startswith("postgres") else db.removeprefix("sqlite:///")
    why = "no billcycle tables" if db.startswith("postgres") else "no such file"
    for command in COMMANDS:
        refused = billcycle(db, *command, check=False)
        assert (refused.returncode, refused.stdout) == (1, ""), command
        assert refused.stderr == (
            f"billcycle: no billcycle store at {where} ({why}); check --db, or make the store "
            "by bringing input (billcycle ingest FILE, billcycle consume)\n"), command
    _no_store_made(db)
    # The installed script says the same in a line, with a non-zero exit.
    report = billcycle_process(db, "report", "ar-aging", "--as-of", AS_OF)
    assert report.returncode == 1 and report.stdout == ""
    assert report.stderr.count("\n") == 1 and "no billcycle store at" in report.stderr
    _no_store_made(db)


def test_consume_refused_for_its_arguments_leaves_no_store(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLCYCLE_KAFKA", raising=False)
    unbooted = billcycle(db, "consume", "--until-caught-up", check=False)
    assert unbooted.returncode == 1
    assert unbooted.stderr == ("billcycle: no Kafka bootstrap server: give --bootstrap "
                               "HOST:PORT or set BILLCYCLE_KAFKA\n")
    badly_named = billcycle(db, "consume", "--bootstrap", "127.0.0.1:9", "--usage-topic",
                            "a/b", check=False)
    assert badly_named.returncode == 1 and "is not a Kafka topic name" in badly_named.stderr
    _no_store_made(db)


def test_ingest_makes_the_store_that_the_other_commands_then_read(db: str) -> None:
    made = billcycle(db, "ingest", "-", stdin=b"")
    assert made.stdout == "accepted 0, duplicates ignored 0, rejected 0\n"
    aging = billcycle(db, "report", "ar-aging", "--as-of", AS_OF)
    assert aging.stdout.startswith("no open receivables")
    # A store with no contracts bills nothing, and says why it may be the wrong one.
    run = billcycle(db, "run", "--cycle-date", AS_OF)
    assert "contracts 0" in run.stdout
    assert "holds no contracts, so there is nothing to bill; if contracts were ingested, it " \
           "was into another store: check --db" in run.stderr
    contract = {"type": "contract.created", "id": "m-1", "occurred_at": "2026-10-01T00:00:00Z",
                "contract_id": "ct_1", "customer_id": "cus_1", "currency": "USD",
                "start_date": "2026-10-01", "billing_frequency": "monthly",
                "components": [{"id": "base", "kind": "subscription", "amount": "100.00"}]}
    billcycle(db, "ingest", "-", stdin=jsonl(contract))
    billed = billcycle(db, "run", "--cycle-date", AS_OF)
    assert "contracts 1" in billed.stdout and "holds no contracts" not in billed.stderr


def test_a_store_from_before_is_upgraded_by_whichever_command_opens_it_first(db: str) -> None:
    # As an earlier version left it: no dead-letter index, no format recorded. A command that
    # may not make a store still makes what a later version adds to one that is there.
    billcycle(db, "ingest", "-", stdin=b"")
    kind = "sqlite" if db.startswith("sqlite") else "postgres"
    on_store(db, f"DROP INDEX {index_name(kind, 'dead_letter')}",
             "DELETE FROM billcycle_store_format")
    assert billcycle(db, "deadletters").returncode == 0
    assert indexed(kind, db, "dead_letter")
    assert on_store(db, "SELECT max(version) FROM billcycle_store_format") == (STORE_FORMAT,)


def test_an_empty_or_foreign_file_is_not_a_store(tmp_path: Path) -> None:
    # An empty file (touched, or left by a tool) and a file that is not SQLite's are refused,
    # and left as they were.
    empty, text = tmp_path / "empty.db", tmp_path / "notes.db"
    empty.touch()
    text.write_text("not a database\n")
    for path, why in ((empty, "no billcycle tables"), (text, "file is not a database")):
        refused = billcycle(f"sqlite:///{path}", "invoices", check=False)
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"billcycle: no billcycle store at {path} ({why});")
    assert empty.read_bytes() == b"" and text.read_text() == "not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "notes.db"]


def test_the_refusal_names_the_setting_that_gave_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from infra.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BILLCYCLE_DB", raising=False)
    assert main(["invoices"]) == 1
    assert ("no billcycle store at " f"{tmp_path / 'billcycle.db'} (no such file); check --db or "
            "BILLCYCLE_DB (neither is set, so the store is sqlite:///billcycle.db)"
            ) in capsys.readouterr().err
    monkeypatch.setenv("BILLCYCLE_DB", f"sqlite:///{tmp_path / 'typo.db'}")
    assert main(["invoices"]) == 1
    assert f"{tmp_path / 'typo.db'} (no such file); check BILLCYCLE_DB," in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
