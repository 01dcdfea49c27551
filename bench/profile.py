"""Where a profiled step spends its time: a summary of py-spy's raw (collapsed) stacks.

`bench.run --profile` runs the billcycle steps under
`py-spy record --idle --threads --format raw`, so waiting on PostgreSQL or Kafka counts as well
as computing. The main thread is summarized, and apart from it each writer thread (ingest's
`ingest-writer`, the run's `billing-save`, the views' `view-writes`: they commit while the main
thread goes on); kafka-python's IO thread and the watchdog mostly sleep. Four views, each as a
% of that thread's samples:

  inclusive   project functions (domain/, consumers/, projections/, infra/) by samples in which
              they are on the stack: where to look
  boundary    the deepest project function on the stack and the call it makes out of the
              project: "infra/store/postgres.py:read_meter -> psycopg/cursor.py:execute 31%"
  leaf        the deepest project function and the leaf, wherever that is: what the time
              under it is spent on ("-> psycopg/connection.py:wait" is waiting for PostgreSQL)
  self        the leaf function alone

    .venv/bin/python -m bench.profile bench/results/<stamp>-batch-small.pyspy.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PROJECT = ("domain/", "consumers/", "projections/", "infra/")
MAIN_THREAD = "MainThread"
WRITER_THREADS = ("ingest-writer", "billing-save", "view-writes")  # ThreadPoolExecutor prefixes
VIEWS = ("inclusive", "boundary", "leaf", "self")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*?)(?::\d+)?\)$")
_REPO = str(Path(__file__).resolve().parent.parent) + "/"


def frames(path: Path, thread: str = MAIN_THREAD) -> Iterator[tuple[list[str], int]]:
    """(frames as "file:function", root first; samples) of one thread's stacks.

    `thread` is the main thread's name or a writer's prefix (its workers are named prefix_N).
    """
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        if not parts[0].startswith("thread (") or _thread(parts[0]) != thread:
            continue
        yield [_name(frame) for frame in parts[1:]], int(count)


def _thread(head: str) -> str:
    """"thread (1279): ingest-writer_0" -> "ingest-writer"; the main thread by its name."""
    name = head.partition("): ")[2]
    prefix, _, number = name.rpartition("_")
    return prefix if prefix in WRITER_THREADS and number.isdigit() else name


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    return f"{_short(match['path'])}:{match['function']}"


def _short(path: str) -> str:
    """A path relative to the repository, site-packages or the standard library."""
    for marker in ("/site-packages/", "/lib/python3.11/", "/lib/python3/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.removeprefix(_REPO)


def is_project(name: str) -> bool:
    return name.startswith(PROJECT)


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    """The views of one profile (module doc), `top` rows each, as % of the main thread's
    samples; under "threads", the same for each writer thread that ran."""
    summary = _summarize_thread(path, MAIN_THREAD, top)
    writers = {name: _summarize_thread(path, name, top) for name in WRITER_THREADS}
    writers = {name: s for name, s in writers.items() if s["samples"]}
    return {**summary, "threads": writers} if writers else summary


def _summarize_thread(path: Path, thread: str, top: int) -> dict[str, Any]:
    views: dict[str, Counter[str]] = {view: Counter() for view in VIEWS}
    total = 0
    for stack, count in frames(path, thread):
        total += count
        for name in set(stack):
            if is_project(name):
                views["inclusive"][name] += count
        deepest, callee, leaf = _ends(stack)
        views["boundary"][f"{deepest} -> {callee}"] += count
        views["leaf"][f"{deepest} -> {leaf}"] += count
        views["self"][stack[-1] if stack else "(idle)"] += count
    if not total:
        return {"samples": 0}
    return {"samples": total, **{
        view: [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]
        for view, counter in views.items()}}


def _ends(stack: list[str]) -> tuple[str, str, str]:
    """The deepest project frame, the call it makes out of the project, and the leaf."""
    leaf = stack[-1] if stack else "(idle)"
    deepest = max((i for i, name in enumerate(stack) if is_project(name)), default=None)
    if deepest is None:
        return "(outside the project)", leaf, leaf
    if deepest + 1 == len(stack):
        return stack[deepest], "(itself)", "(itself)"
    return stack[deepest], stack[deepest + 1], leaf


_DURATION = re.compile(
    r"duration: (?P<ms>[\d.]+) ms\s+(?:statement|execute [^:]*|bind [^:]*|parse [^:]*): "
    r"(?P<sql>.*)")


def statements(log: Iterable[str], wall: float, top: int = 8) -> list[list[Any]]:
    """PostgreSQL's time per statement from its log (log_min_duration_statement = 0).

    Rows: [statement (its first 110 characters), total ms, calls, % of the step's wall time].
    Parse, bind and execute of one statement are logged apart; their times add up.
    """
    total: dict[str, float] = {}
    calls: Counter[str] = Counter()
    for line in log:
        match = _DURATION.search(line)
        if match is None:
            continue
        sql = " ".join(match["sql"].split())[:110]
        total[sql] = total.get(sql, 0.0) + float(match["ms"])
        if "execute" in line or "statement:" in line:
            calls[sql] += 1
    return [[sql, round(ms), calls[sql], round(ms / 10 / wall, 1) if wall else 0.0]
            for sql, ms in sorted(total.items(), key=lambda item: -item[1])[:top]]


def render(name: str, summary: dict[str, Any], top: int = 8) -> str:
    """A summary as text: one block per view."""
    if not summary.get("samples"):
        return f"{name}: no samples"
    out = [f"{name}: {summary['samples']:,} samples of the main thread (py-spy --idle)"]
    out.extend(_views(summary, top))
    for thread, writer in summary.get("threads", {}).items():
        out.append(f"  thread {thread}: {writer['samples']:,} samples")
        out.extend("  " + line for line in _views(writer, top))
    if summary.get("postgres"):
        out.append("  PostgreSQL's time per statement (% of the wall time):")
        out.extend(f"    {pct:5.1f}%  {ms:>8,} ms  {calls:>7,} calls  {sql}"
                   for sql, ms, calls, pct in summary["postgres"][:top])
    return "\n".join(out)


def _views(summary: dict[str, Any], top: int) -> list[str]:
    out = []
    for view in VIEWS:
        out.append(f"  {view}:")
        out.extend(f"    {pct:5.1f}%  {what}" for what, pct in summary[view][:top])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("raw", nargs="+", type=Path, help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for path in args.raw:
        print(render(path.name, summarize(path, args.top), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
