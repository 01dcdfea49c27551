"""Meter updates behind ingest: the store's meter backlog folded while ingest goes on.

A store may leave recorded usage in a backlog instead of folding it into the meters in the
ingest transaction (PostgreSQL does: the fold is the server's work, and that transaction holds
the lock every writer waits for). Billing folds whatever is left before it reads, so nothing is
ever billed from a lagging meter; folding behind ingest keeps what is left small, and keeps the
meters current for anyone reading them while a consumer runs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from domain.application import BillingApplication

RETRY_AFTER = 1.0  # seconds before a failed fold (the database away) is tried again
# Usage batches per fold at most (about 100,000 records, a few seconds of the server's work):
# a stop waits for one fold, however large the backlog.
STEP = 50


class MeterUpdates:
    """Folds on a thread of its own, one at a time, until every committed batch is folded.

    Each batch that commits asks for a fold; asks that come while one runs are answered by one
    more fold after it, which starts after their commits: the last batch is always folded,
    however ingest's batches and the folds interleave.
    """

    def __init__(
        self, app: BillingApplication, transient: Sequence[type[Exception]] = ()
    ) -> None:
        self.app = app
        self.transient = tuple(transient)  # errors that pass (the database away): retried
        self._failed: Exception | None = None  # any other, raised by the next after_batch
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def after_batch(self) -> None:
        """A batch committed: fold it (and whatever else is in the backlog) soon."""
        if self._failed is not None:
            raise self._failed
        if self._thread is None:
            self._thread = threading.Thread(target=self._fold, name="meter-updates", daemon=True)
            self._thread.start()
        self._wanted.set()

    def _fold(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            try:
                if self.app.update_meters(STEP) >= STEP:
                    self._wanted.set()  # more may be left: go on (a stop may come first)
            except self.transient:  # the backlog is kept: folded on the next try
                self._wanted.set()
                self._stopping.wait(RETRY_AFTER)
            except Exception as error:
                self._failed = error
                return

    def stop(self) -> None:
        """Wait for a fold in progress; what is left stays in the backlog for the next one."""
        self._stopping.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def finish(self) -> int:
        """Wait for a fold in progress, then fold what is left: the meters are up to date."""
        self.stop()
        return self.app.update_meters()
