"""Patience: a step that needs the database or Kafka, run through their outages, and every
wait named while it lasts (`waiting for PostgreSQL at ...: no answer for 6s`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
Say = Callable[[str], None]


class Stopped(Exception):
    """A stop was asked for (SIGTERM) while waiting."""


class Patience:
    """Runs a step that needs the database or Kafka, through their outages.

    A transient failure is retried after a pause that doubles up to `longest`, and each retry
    says what it is waiting for; a stop request ends the wait with Stopped. A step that hangs
    (the database client waits for a connection, with its own retries) is named every `slow`
    seconds while it lasts.
    """

    def __init__(self, say: Say, stop: threading.Event, first: float = 0.5,
                 longest: float = 15.0, slow: float = 3.0) -> None:
        self.say = say
        self.stop = stop
        self.first = first
        self.longest = longest
        self.slow = slow
        # What each thread is waiting for, and since when: the polling thread waits on Kafka
        # while the writer thread waits on the database.
        self._current: dict[int, tuple[str, float, str]] = {}
        self._watcher: threading.Thread | None = None

    def call(self, what: str, step: Callable[[], T], transient: tuple[type[Exception], ...],
             give_up_after: float | None = None) -> T:
        """The step's result, retried through transient failures; with `give_up_after`, the
        failure that would take the wait past that many seconds is raised instead."""
        pause, failures, started = self.first, 0, time.monotonic()
        while True:
            try:
                with self.watch(what):
                    result = step()
            except transient as error:
                if (give_up_after is not None
                        and time.monotonic() + pause - started >= give_up_after):
                    raise
                failures += 1
                self.say(f"waiting for {what}: {error_line(error)}; "
                         f"retry {failures} in {pause:.1f}s")
                self.wait(pause)
                pause = min(pause * 2, self.longest)
                continue
            if failures:
                self.say(f"{what} is back (after {failures} retries)")
            return result

    def wait(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Stopped

    @contextmanager
    def watch(self, what: str, since: float | None = None,
              told: str = "no answer for {}s") -> Iterator[bool]:
        """Name `what` while the step in this block takes longer than `slow` seconds, counted
        from `since` (a time.monotonic(); now if not given): `waiting for <what>: <told>`, its
        {} the seconds. Within a watch of the same thread it is named instead of the outer
        one until it ends; only the outermost yields True."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="patience", daemon=True)
            self._watcher.start()
        thread = threading.get_ident()
        outer = self._current.get(thread)
        self._current[thread] = (what, time.monotonic() if since is None else since, told)
        try:
            yield outer is None
        finally:
            if outer is None:
                del self._current[thread]
            else:
                self._current[thread] = outer

    def _watch(self) -> None:
        said: dict[tuple[str, float, str], float] = {}  # each wait named, and when last said
        while not self.stop.wait(self.slow / 5):
            now = time.monotonic()
            # Threads waiting for the same thing (a run's reader and writer, on the database)
            # are named once, by the longest wait.
            longest: dict[tuple[str, str], float] = {}
            for what, since, told in list(self._current.values()):
                if now - since >= self.slow:
                    longest[what, told] = min(since, longest.get((what, told), since))
            waits = [(what, since, told) for (what, told), since in longest.items()]
            said = {w: at for w, at in said.items() if w in waits}
            for wait in waits:
                if now - said.get(wait, wait[1]) >= self.slow:
                    self.say(f"waiting for {wait[0]}: " + wait[2].format(f"{now - wait[1]:.0f}"))
                    said[wait] = now


def error_line(error: BaseException) -> str:
    """The error's type and first line: `KafkaTimeoutError: Failed to get offsets ...`."""
    name = type(error).__name__
    text = str(error).strip().splitlines()
    if not text:
        return name
    return text[0] if text[0].startswith(name) else f"{name}: {text[0]}"
