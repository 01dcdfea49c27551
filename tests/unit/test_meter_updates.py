"""MeterUpdates folds behind ingest: every committed batch is folded, however they interleave."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from consumers.meter_updates import STEP, MeterUpdates
from domain.application import BillingApplication


class Store:
    """update_meters that counts the batches committed before each fold began."""

    def __init__(self) -> None:
        self.committed = 0
        self.folded = 0
        self.folding = threading.Event()
        self.go_on = threading.Event()
        self.go_on.set()
        self.failures: list[Exception] = []

    def update_meters(self, most: int | None = None) -> int:
        self.folding.set()
        if self.failures:
            raise self.failures.pop(0)
        seen = self.committed
        self.go_on.wait(5)
        self.folded = max(self.folded, seen)
        return 1


def updates(store: Store, transient: tuple[type[Exception], ...] = ()) -> MeterUpdates:
    return MeterUpdates(cast(BillingApplication, store), transient)


def test_a_batch_committed_while_a_fold_runs_is_folded_by_the_next() -> None:
    store = Store()
    meters = updates(store)
    store.go_on.clear()
    store.committed = 1
    meters.after_batch()
    assert store.folding.wait(5)  # the first fold runs, having seen batch 1 only
    store.committed = 2
    meters.after_batch()  # while it runs
    store.go_on.set()
    eventually(lambda: store.folded == 2)  # no further batch needed
    meters.stop()


def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_finish_folds_everything_committed() -> None:
    store = Store()
    meters = updates(store)
    for n in range(1, 6):
        store.committed = n
        meters.after_batch()
    assert meters.finish() == 1
    assert store.folded == 5


def test_a_database_away_is_retried_and_any_other_failure_surfaces() -> None:
    store = Store()
    store.failures = [ConnectionError("database away")]
    meters = updates(store, transient=(ConnectionError,))
    store.committed = 1
    meters.after_batch()
    eventually(lambda: store.folded == 1)  # tried again a second later
    meters.stop()

    broken = Store()
    broken.failures = [ValueError("a bug")]
    meters = updates(broken)
    meters.after_batch()
    assert broken.folding.wait(5)
    meters.stop()
    with pytest.raises(ValueError, match="a bug"):
        meters.after_batch()


class Backlog:
    """A backlog of `left` batches, folded STEP at a time."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.calls = 0

    def update_meters(self, most: int | None = None) -> int:
        self.calls += 1
        taken = min(self.left, most if most is not None else self.left)
        self.left -= taken
        return taken


def test_a_large_backlog_is_folded_a_step_at_a_time_to_the_end() -> None:
    backlog = Backlog(STEP * 3 + 7)
    meters = MeterUpdates(cast(BillingApplication, backlog))
    meters.after_batch()
    eventually(lambda: backlog.left == 0)  # with no further batch
    meters.stop()
    assert backlog.calls == 4


def test_nothing_runs_for_an_ingest_without_batches() -> None:
    store: Any = Store()
    meters = updates(store)
    meters.stop()
    assert not store.folding.is_set()
