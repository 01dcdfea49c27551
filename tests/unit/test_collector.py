"""The collector policy for bulk work: tuned inside, exactly as before outside."""

import gc

import pytest

from infra import cli
from infra.collector import BULK_THRESHOLD, tuned_for_bulk_work


def test_bulk_work_freezes_what_exists_and_puts_the_collector_back() -> None:
    before = gc.get_threshold()
    with tuned_for_bulk_work():
        assert gc.get_threshold() == BULK_THRESHOLD
        assert gc.get_freeze_count() > 0  # the objects alive before the work
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_during_bulk_work_are_still_collected() -> None:
    with tuned_for_bulk_work():
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1


def test_the_command_exits_with_mains_status_and_what_is_alive_frozen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "main", lambda: 3)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.run()
        assert exited.value.code == 3
        assert gc.get_freeze_count() > 0  # not walked again by the collections at exit
    finally:
        gc.unfreeze()
