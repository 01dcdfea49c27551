"""A command other than consume waits out a PostgreSQL outage and says so while it lasts."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from domain.application import BillingApplication
from infra import cli
from infra.postgres import LocalPostgres

DOWN_FOR = 7.0


def test_a_billing_run_names_its_wait_for_a_stopped_postgresql_and_its_end(
    pg_cluster: LocalPostgres, fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opened = cli.open_app
    restarted: list[threading.Thread] = []

    def open_then_stop(url: str, **how: Any) -> BillingApplication:
        app = opened(url, **how)  # reachable at the start: the server stops during the command
        pg_cluster.keep_data = True
        pg_cluster.stop()
        restarted.append(threading.Thread(target=start_later))
        restarted[0].start()
        return app

    def start_later() -> None:
        time.sleep(DOWN_FOR)
        pg_cluster.start()
        pg_cluster.keep_data = False

    assert cli.main(["--db", fresh_pg_url, "ingest", "/dev/null"]) == 0  # makes the store
    monkeypatch.setattr(cli, "open_app", open_then_stop)
    code = cli.main(["--db", fresh_pg_url, "run", "--cycle-date", "2026-11-01",
                     "--batch-id", "outage-1"])
    restarted[0].join()

    err = capsys.readouterr().err
    assert code == 0, err
    database = fresh_pg_url.rsplit("/", 1)[1]
    where = f"PostgreSQL at 127.0.0.1:{pg_cluster.port}/{database}"
    assert re.search(rf"billcycle run: waiting for {re.escape(where)}: no answer for \d+s\n",
                     err), err
    assert re.search(rf"billcycle run: {re.escape(where)} is back \(after \d+s\)\n", err), err
