"""The cyclic garbage collector tuned for bulk work: billing runs and ingest.

Bulk work allocates many short-lived containers per record (parsed JSON, commands, rows) and
frees nearly all of them by reference counting, while what stays alive is large: the modules,
the store, Kafka's buffered fetches, a batch in flight, a run's growing report. With the
default first-generation threshold (700 allocations) the collector runs thousands of times
and its older generations walk all of that again and again: a billing run took more than 10x
the time for 10x the book, and `consume` spent about a quarter of its CPU in the collector
(2.8-3.0 s of 11-12 CPU-s per 100,000 usage records). Objects alive before the work are
frozen out of collection, and the collector runs once per 50,000 net allocations. Nothing is
left uncollected: cycles are still found, later.

What is alive is frozen as it is, without a collection first: that collection walked
everything the imports made (65 ms of a consumer's start) to free a few dozen objects, which
are freed with the rest when the work ends and the objects are unfrozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = (50_000, 50, 100)


@contextmanager
def tuned_for_bulk_work() -> Iterator[None]:
    """The collector tuned for bulk work, and put back afterwards (tests call main())."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*BULK_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def freeze_for_exit() -> None:
    """The command is done and the process exits: leave what is alive to the operating system.

    At exit the interpreter runs the collector over every object still alive (the modules,
    Kafka's client, the store, a run's caches) once more: 0.3 s of a 7 s `consume` of 100,000
    records. Frozen objects are not walked; everything is still released with the process, and
    objects without cycles are still finalized as the modules are torn down.
    """
    gc.freeze()
