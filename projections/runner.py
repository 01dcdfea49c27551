"""Following the log: catch every projection up, keep following it, or rebuild it by replay.

The projections read the log together, a page at a time: only their topics (so the database
filters out the events none of them reads) and each event decoded once. Each projection
writes its part of the page with its tracking in one transaction. A page ends at the last
event it read or, when the log has no more of the projections' events, at the log position
the catch-up aimed for; so tracking says how far the log has been read, and a restart resumes
right after it. A page
that another writer got to first (a second `billcycle project`, a report catching up at the
same time) is refused by the view and read again from the new position.

On PostgreSQL a view's write runs in a thread of its own while the runner computes the next
view's rows and reads the next page; a view's next page is computed only once its last write
is committed (it may read its own rows), and tracking still moves with each write.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventsourcing.persistence import IntegrityError, Notification, Tracking
from eventsourcing.sqlite import SQLiteRecorder

from domain.application import BillingApplication
from domain.collections import CollectionPolicy
from projections import parallel
from projections.audit import AuditProjection
from projections.collections import CollectionsProcess, CollectionsProjection
from projections.ledger import LedgerProjection
from projections.persistence import View, ViewConflict
from projections.projection import Positioned, ViewProjection, documents
from projections.revenue import RevenueProjection
from projections.sqlite import SQLiteView

DEFAULT_PAGE_SIZE = 5000
MAX_CONFLICTS = 20

PROJECTIONS: dict[str, type[ViewProjection]] = {
    cls.name: cls
    for cls in (LedgerProjection, RevenueProjection, AuditProjection, CollectionsProjection)
}


def reads_collections(names: Sequence[str]) -> bool:
    """Whether any of the named views (all, where none is named) reads the events the
    collections process writes: those cannot be brought up to date without it."""
    return any(set(PROJECTIONS[n].topics) & set(CollectionsProcess.writes)
               for n in (names or PROJECTIONS) if n in PROJECTIONS)


class Follower(Protocol):
    """Anything that follows the log with tracking: a view projection or a process."""

    name: str
    topics: tuple[str, ...]

    def position(self) -> int: ...

    def process(self, events: Sequence[Positioned], tracking: Tracking, after: int) -> None: ...


class UnknownProjection(LookupError):
    """A projection name that is not one of PROJECTIONS."""


def open_view(app: BillingApplication, projection: type[ViewProjection],
              rebuilding: bool = False) -> View:
    """The projection's view, in the database of the application's event store; when
    `rebuilding`, as a replay's drop() just left it (see PostgresView)."""
    recorder: Any = app.recorder
    if isinstance(recorder, SQLiteRecorder):
        return SQLiteView(recorder.datastore, projection.name, projection.tables, app.name,
                          projection.rules)
    # Imported here: psycopg takes a while to import and the embedded store never needs it.
    from eventsourcing.postgres import PostgresRecorder

    from projections.postgres import PostgresView

    if isinstance(recorder, PostgresRecorder):
        return PostgresView(recorder.datastore, projection.name, projection.tables, app.name,
                            projection.rules, rebuilding)
    raise TypeError(f"no views for a {type(recorder).__name__} store; use SQLite or PostgreSQL")


def catch_up(
    app: BillingApplication,
    followers: Sequence[Follower],
    target: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    on_page: Callable[[str, int, int], None] | None = None,
    on_read: Callable[[Sequence[Notification]], None] | None = None,
) -> dict[str, int]:
    """Process the followers' events through log position `target`, reading the log once for
    all of them and decoding each event once; the number of events each one processed.
    `on_read` is given the stored events each page read (each once, whoever uses it)."""
    done = {f.name: 0 for f in followers}
    conflicts = dict.fromkeys(done, 0)
    at = {f.name: f.position() for f in followers}  # as if the writes in flight went through
    in_flight: list[_Write] = []

    def written(f: Follower, events: int, through: int) -> None:
        conflicts[f.name] = 0
        done[f.name] += events
        if on_page is not None:
            on_page(f.name, through, target)

    def refused(f: Follower, after: int, exc: Exception) -> None:
        moved_on = f.position()  # another writer's: read again from there
        # Losing to a writer that moved the view on is progress; a refusal with the view
        # still where it was is not, and repeated it is a fault to report.
        conflicts[f.name] = 0 if moved_on > after else conflicts[f.name] + 1
        if conflicts[f.name] > MAX_CONFLICTS:
            raise ViewConflict(
                f"{f.name}: {MAX_CONFLICTS} writes refused at log position {after} with the "
                f"view not moving on: {exc}"
            ) from exc
        at[f.name] = moved_on

    def settle() -> bool:
        """Wait for the writes in flight; whether all of them went through."""
        through_all = True
        for w in in_flight:
            try:
                w.result.result()
            except (ViewConflict, IntegrityError) as exc:
                refused(w.follower, w.after, exc)
                through_all = False
            else:
                written(w.follower, w.events, w.through)
        in_flight.clear()
        return through_all

    # One thread writes views on PostgreSQL while this one computes the next view's rows and
    # reads the next page: the server works on one core while Python works on the other.
    with _young_garbage_per_page(), ThreadPoolExecutor(1, "view-writes") as writer:
        while True:
            behind = [f for f in followers if at[f.name] < target]
            if not behind:
                if in_flight and not settle():
                    continue  # a refused write moved a view back: read again from there
                break
            notifications = app.recorder.select_notifications(
                start=min(at[f.name] for f in behind), limit=page_size, stop=target,
                topics=sorted({t for f in behind for t in f.topics}), inclusive_of_start=False,
            )
            # A view reads its own rows to compute the next page: its last write first.
            if not settle():
                continue  # read from the positions of the refused views again
            gc.collect(1)  # the last page's objects went by reference counting; the rest now
            through = notifications[-1].id if len(notifications) == page_size else target
            if on_read is not None:
                on_read(notifications)
            decoded: dict[int, Any] = {}
            events: list[Positioned] = []
            for f in behind:
                after, topics = at[f.name], set(f.topics)
                if after >= through:
                    continue
                events = []
                for n in notifications:
                    if n.id > after and n.topic in topics:
                        if n.id not in decoded:
                            decoded[n.id] = app.mapper.to_domain_event(n)
                        events.append((decoded[n.id], n.id))
                tracking = Tracking(app.name, through)
                if isinstance(f, ViewProjection) and f.view.background_writes:
                    result = writer.submit(f.view.write, f.changes(events), tracking, after)
                    in_flight.append(_Write(f, result, after, through, len(events)))
                    at[f.name] = through
                    continue
                try:
                    f.process(events, tracking, after)
                except (ViewConflict, IntegrityError) as exc:
                    refused(f, after, exc)
                    continue
                at[f.name] = through
                written(f, len(events), through)
            # The page's events go now, by reference counting, before the next collection.
            documents.forget()
            decoded.clear()
            events = []
    return done


@dataclass
class _Write:
    """A view's write in flight: its page, for the tracking of what was done."""

    follower: Follower
    result: Future[None]
    after: int
    through: int
    events: int


@contextmanager
def _young_garbage_per_page() -> Iterator[None]:
    """The cyclic garbage collector off while pages are processed, and the young generations
    collected after each page instead.

    A page's events and rows are a million objects or so, alive until the page is written and
    then freed by reference counting. Collected automatically, they trigger a full collection
    every few pages that walks them all: a fifth of a replay's CPU. Between pages the young
    objects are few, so collecting them then is cheap, and cycles still go.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Projections:
    """The read side of one application: the named projections (all by default)."""

    app: BillingApplication
    names: Sequence[str] = ()
    page_size: int = DEFAULT_PAGE_SIZE
    policy: CollectionPolicy = field(default_factory=CollectionPolicy)
    on_page: Callable[[str, int, int], None] | None = None
    # A replay on PostgreSQL builds some views in a second process (projections/parallel.py),
    # and so does a catch-up with the views at least `parallel_after` log positions behind
    # (after a billing run); closer to the end, the second interpreter's start costs more.
    parallel: bool = True
    parallel_after: int = 20_000
    # The second process's views, just emptied by the replay: opened as they are, without
    # the keys and indexes that the replay makes at its end (finish_build()).
    rebuilding: bool = False
    # False: the collections process does not run (its schedule is not usable), only views
    # that do not read its events may be chosen.
    collections_process: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(PROJECTIONS))
        if unknown:
            raise UnknownProjection(
                f"no projection {', '.join(unknown)}; the projections are "
                f"{', '.join(PROJECTIONS)}"
            )
        chosen = [PROJECTIONS[n] for n in (self.names or list(PROJECTIONS))]
        if not self.collections_process and reads_collections(self.names):
            raise ValueError("views reading Collection events need the collections process")
        self.views: dict[str, ViewProjection] = {
            cls.name: cls(open_view(self.app, cls, self.rebuilding)) for cls in chosen
        }
        # Collection events come from a process following the log. It runs on every catch-up,
        # whichever views are chosen (before the views reading its events): on the embedded
        # store there is no process of its own, and collections should follow their invoices
        # as soon as anything reads.
        self.process = CollectionsProcess(self.app, self.policy)
        # Stored events read from the log, each counted once however many views use it
        # (a replay's second process counts only those of topics this one does not read).
        self.events_read = 0
        self.counted_elsewhere: frozenset[str] = frozenset()

    def view(self, name: str) -> View:
        return self.views[name].view

    def rebuilt(self) -> dict[str, str]:
        """The views dropped when opened, as made by another version of billcycle, and how
        they differed: the next catch-up builds them from the first event."""
        return {name: p.view.drifted for name, p in self.views.items() if p.view.drifted}

    def catch_up(self) -> dict[str, int]:
        """Bring every chosen projection to the current end of the log: events processed."""
        if self.parallel:  # how far behind is asked only where the answer can matter
            end = self.app.recorder.max_notification_id() or 0
            if end - min(p.position() for p in self.views.values()) >= self.parallel_after:
                return self._in_two_processes(rebuilding=False)
        return self.catch_up_in_one_process()

    def catch_up_in_one_process(self) -> dict[str, int]:
        """catch_up() here: the collections process and the views that do not read its
        events in one pass over the log (each event read and decoded once for all of them),
        then the views that do read its events, through the ones it just wrote."""
        if not self.collections_process:
            return self.build()
        # Upgraded from a billcycle that did not note refunds: those it read past, first.
        passed = self.process.note_passed_refunds()
        if self.process.position() >= (self.app.recorder.max_notification_id() or 0):
            # Nothing for the process (a replay, usually): every view in the same pass.
            return {self.process.name: passed, **self.build()}
        after = [p for p in self.views.values() if set(p.topics) & set(self.process.writes)]
        beside = [p for p in self.views.values() if p not in after]
        counts = self._run([self.process, *beside])
        counts[self.process.name] += passed
        if after:
            counts.update(self._run(after))
        return counts

    def build(self) -> dict[str, int]:
        """Bring the chosen views (not the collections process) to the end of the log."""
        return self._run(list(self.views.values()))

    def replay(self) -> dict[str, int]:
        """Throw the chosen views away and build them again from the whole log."""
        for projection in self.views.values():
            projection.view.drop()
        counts = self._in_two_processes(rebuilding=True)
        for projection in self.views.values():  # each process finished its own; here, a check
            projection.view.finish_build()
        return counts

    def _in_two_processes(self, rebuilding: bool) -> dict[str, int]:
        """catch_up_in_one_process(), in two where that can be (PostgreSQL, two cores, views
        on both sides): the second process runs the collections process with its views;
        `rebuilding`: the views were just dropped."""
        here, there = parallel.split(list(self.views))
        writes_in_threads = all(p.view.background_writes for p in self.views.values())
        if not (self.parallel and there and writes_in_threads and self.collections_process):
            return self.catch_up_in_one_process()
        mine = [self.views[name] for name in here]
        helper = parallel.start(dict(self.app.env), there, self.page_size,
                                sorted({t for p in mine for t in p.topics}), rebuilding,
                                self.policy.text())
        try:
            counts = self._run(mine)
            if rebuilding:  # the keys and indexes while the other process may still work
                for projection in mine:
                    projection.view.finish_build()
            theirs, events_read = helper.result()
        finally:
            helper.stop()
        counts.update(theirs)
        self.events_read += events_read
        return counts

    def follow(self, stop: threading.Event, interval: float = 0.5) -> dict[str, int]:
        """Keep catching up until `stop` is set: the events processed meanwhile."""
        total: dict[str, int] = {}
        while not stop.is_set():
            for name, count in self.catch_up().items():
                total[name] = total.get(name, 0) + count
            stop.wait(interval)
        return total

    def _run(self, followers: Sequence[Follower]) -> dict[str, int]:
        target = self.app.recorder.max_notification_id() or 0
        return catch_up(self.app, followers, target, self.page_size, self.on_page,
                        self._read)

    def _read(self, notifications: Sequence[Notification]) -> None:
        if self.counted_elsewhere:
            self.events_read += sum(n.topic not in self.counted_elsewhere for n in notifications)
        else:
            self.events_read += len(notifications)
