"""Running one measured child process: wall time, CPU time, peak RSS, and the servers' CPU.

CPU time comes from `os.wait4`, which reports that child alone (RUSAGE_CHILDREN would sum all
children so far). Peak RSS does not: Linux starts a child's ru_maxrss at the size of the parent
it was forked from, so it is polled instead, as VmHWM (the high-water mark of the process's own
memory, which exec resets) of the child and its descendants (a profiler's child) every 50 ms;
the largest process's mark is the figure. The servers' CPU is read from /proc before and
after: a PostgreSQL server's backends come and go, and the postmaster accumulates the CPU of
those that have exited (cutime), so postmaster + live children is the whole server.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    """What one child process took."""

    command: list[str]
    returncode: int
    wall: float  # seconds
    cpu: float  # user + system seconds of the child itself
    peak_rss: int  # bytes
    servers_cpu: dict[str, float] = field(default_factory=dict)  # seconds, per server
    load: float = 0.0  # 1-minute load average when the child started
    stdout: str = ""

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss / 2**20


class ChildFailed(RuntimeError):
    """A measured child exited non-zero; the message ends with its stderr."""


def run_child(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    servers: dict[str, int | None] | None = None,
    log: Path | None = None,
    check: bool = True,
) -> Child:
    """Run `command` to completion and measure it; stdout is kept, stderr goes to `log`."""
    running: dict[str, int] = {name: pid for name, pid in (servers or {}).items() if pid}
    before = {name: process_tree_cpu(pid) for name, pid in running.items()}
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, open(log or os.devnull, "ab") as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=out, stderr=err)
        peak = _PeakRss(process.pid)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        peak.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    child = Child(
        command=list(command),
        returncode=process.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=peak.bytes,
        servers_cpu={name: process_tree_cpu(pid) - before[name] for name, pid in running.items()},
        load=load,
        stdout=stdout,
    )
    if check and child.returncode != 0:
        tail = _tail(log) if log else ""
        raise ChildFailed(f"{' '.join(command)} exited {child.returncode}:\n{tail}")
    return child


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class _PeakRss:
    """Polls the high-water RSS of a process and its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.bytes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="peak-rss", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _poll(self) -> None:
        while True:
            for pid in [self.pid, *_descendants(self.pid)]:
                self.bytes = max(self.bytes, _high_water(pid))
            if self._done.wait(self.interval):
                return


def _high_water(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0  # gone, or a zombie (no memory left to report)


def _descendants(pid: int) -> list[int]:
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(_children(child))
    return found


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid`, its exited children it reaped, and its live children."""
    total = _stat_cpu(pid, with_children=True)
    for child in _children(pid):
        total += _stat_cpu(child, with_children=False)
    return total


def _stat_cpu(pid: int, with_children: bool) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found  # gone meanwhile
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found
