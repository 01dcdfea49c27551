"""Views built by two processes, so that Python's work uses both cores: in a replay, and in
a catch-up far behind the log (the first `billcycle project` after a billing run).

One process computes rows at a time (the GIL), and building views is bound by that: the view
writes already run in a thread while the next rows are computed, and the server works on
the other core. So on PostgreSQL the audit and collections views are built in a second
process, which also runs the collections process (in one pass with the audit view, then the
collections view through the events it wrote), while the first one builds the ledger and
revenue (which share each invoice's schedules, made once per event, and are most of the
work).

It costs CPU (a second interpreter's start, the invoices read and decoded twice: a sixth
more at 100,000 contracts) for wall time (a fifth less), so it pays where a second core is
free, and only then: on one core, or on SQLite, everything is built in one process.

In a replay, the second process opens the views as the replay's drop() left them, without
the keys and indexes that a bulk load is cheaper without, and makes them once its views are
built (finish_build()), while the replaying process may still be building its own.

Nothing changes in how a view is written: each process writes its views page by page, each
page with the view's tracking in one transaction, so a view is always as complete as its
tracking says, and `billcycle project` resumes every view from there, whatever was killed.
The second process dies with the replaying one (Linux's parent-death signal), so a killed
replay leaves no process behind still writing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The views the second process builds; the ledger and revenue stay in the replaying one.
SECOND = ("audit", "collections")


def split(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The views to build here and those to build in the second process (none: all here)."""
    here = [n for n in names if n not in SECOND]
    there = [n for n in names if n in SECOND]
    if not here or not there or (os.cpu_count() or 1) < 2:
        return list(names), []
    return here, there


class SecondProcessFailed(RuntimeError):
    """The second process of a replay failed; the message ends with its traceback."""


@dataclass
class Helper:
    """The second process: `python -m projections.parallel`, told what to build on its
    standard input, answering on its standard output (JSON both ways)."""

    process: subprocess.Popen[bytes]

    def result(self) -> tuple[dict[str, int], int]:
        """Wait for the views' counts and the events the process read (those of topics the
        replaying process does not read: each stored event counted once)."""
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        self.process.wait()
        try:
            answer = json.loads(out)
        except ValueError:
            raise SecondProcessFailed(
                f"the replay's second process ended (exit code {self.process.returncode}) "
                "without a result") from None
        if answer["failure"] is not None:
            raise SecondProcessFailed(f"the replay's second process failed:\n{answer['failure']}")
        return answer["counts"], answer["events_read"]

    def stop(self) -> None:
        """End the process if it still runs (the replay is failing); its views keep what it
        committed, as after any kill."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def start(env: dict[str, str], names: Sequence[str], page_size: int,
          read_here: Sequence[str], rebuilding: bool = True, policy: str = "") -> Helper:
    """Start the second process running the collections process (with the collection
    `policy`, parse()'s text; the default policy when empty) and building the views `names`
    to the end of the log; it counts the events it reads of topics other than `read_here`.
    `rebuilding`: the views are as a replay's drop() left them (False: a catch-up)."""
    # A new interpreter, not a fork: this process holds a connection pool and a writer
    # thread. It imports only the store and the views (not the CLI, not Kafka).
    process = subprocess.Popen([sys.executable, "-m", "projections.parallel"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None
    task = {"env": env, "names": list(names), "page_size": page_size,
            "read_here": sorted(read_here), "rebuilding": rebuilding, "policy": policy,
            "parent": os.getpid()}
    process.stdin.write(json.dumps(task).encode())
    process.stdin.close()
    return Helper(process)


def _build(task: dict[str, Any]) -> dict[str, Any]:
    from domain.application import BillingApplication
    from domain.collections import CollectionPolicy
    from projections.runner import Projections

    app = BillingApplication(env=task["env"])
    try:
        policy = CollectionPolicy.parse(task["policy"]) if task["policy"] else CollectionPolicy()
        projections = Projections(app, task["names"], page_size=task["page_size"],
                                  policy=policy, parallel=False, rebuilding=task["rebuilding"])
        projections.counted_elsewhere = frozenset(task["read_here"])
        counts = projections.catch_up_in_one_process()
        if task["rebuilding"]:  # the keys and indexes that drop() left for the build's end
            for projection in projections.views.values():
                projection.view.finish_build()
        return {"counts": counts, "events_read": projections.events_read, "failure": None}
    except BaseException:
        return {"counts": None, "events_read": 0, "failure": traceback.format_exc()}
    finally:
        app.close()


def _die_with(parent: int) -> None:
    """Be killed when the replaying process ends, however it ends (Linux; elsewhere the
    process finishes its views, each write still with its tracking)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def main() -> None:
    task = json.loads(sys.stdin.buffer.read())
    _die_with(task["parent"])
    answer = _build(task)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
