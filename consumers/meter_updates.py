"""Meter updates behind ingest: the store's meter backlog folded while ingest goes on.

A store may leave recorded usage in a backlog instead of folding it into the meters in the
ingest transaction (PostgreSQL does: the fold is the server's work, and that transaction holds
the lock every writer waits for). Billing folds whatever is left before it reads, so nothing is
ever billed from a lagging meter; folding behind ingest keeps what is left small.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from domain.application import BillingApplication


class MeterUpdates:
    """One fold at a time on a thread of its own; the server works while ingest goes on."""

    def __init__(self, app: BillingApplication) -> None:
        self.app = app
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meter-updates")
        self._running: Future[int] | None = None

    def after_batch(self) -> None:
        """A batch committed: start a fold unless one is running (it takes this batch too,
        or the next one does). A failed fold is left to the next one and to `finish`."""
        if self._running is None or self._running.done():
            self._running = self._thread.submit(self.app.update_meters)

    def stop(self) -> None:
        """Wait for a fold in progress (its failure does not matter: the backlog stays)."""
        self._thread.shutdown(wait=True)

    def finish(self) -> int:
        """Wait for a fold in progress, then fold what is left: the meters are up to date."""
        self.stop()
        return self.app.update_meters()
