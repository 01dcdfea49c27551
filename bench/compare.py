"""Two or more bench results side by side: each figure's rate and peak RSS, run by run.

    .venv/bin/python -m bench.compare bench/results/A.json bench/results/B.json

Figures are matched by step, figure and size; the last column is the last run against the
first. Mind the load column of each run's table: the machine's other work moves the rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.run import _grid


def _key(figure: dict[str, Any]) -> tuple[str, str, str]:
    return figure["step"], figure["what"], figure["size"]


def compare(runs: list[dict[str, Any]]) -> str:
    keys: list[tuple[str, str, str]] = []
    for run in runs:
        keys += [k for k in map(_key, run["figures"]) if k not in keys]
    by_run = [{_key(f): f for f in run["figures"]} for run in runs]
    head = ["step", "figure", "size", *(f"{r['stamp']} /s" for r in runs),
            *(f"{r['stamp']} MiB" for r in runs), "last / first"]
    rows = []
    for key in keys:
        found = [figures.get(key) for figures in by_run]
        rates = [f["rate"] if f and f["rate"] else None for f in found]
        rss = [f["child"]["peak_rss_mib"] if f and f["child"] else None for f in found]
        change = f"{rates[-1] / rates[0]:.2f}x" if rates[0] and rates[-1] else ""
        rows.append([*key, *(f"{r:,.0f}" if r else "" for r in rates),
                     *(f"{m:,.0f}" if m else "" for m in rss), change])
    return _grid(head, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("results", nargs="+", type=Path, help="bench/results/<stamp>.json")
    args = parser.parse_args(argv)
    print(compare([json.loads(path.read_text()) for path in args.results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
