"""Drive the `billcycle` command line as an operator would.

Commands run in this process through `infra.cli.main` (the console script's entry point), so
a scenario of many commands stays fast; `billcycle_process` runs the installed script itself.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any

from infra.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def billcycle(db: str, *args: str, check: bool = True, stdin: bytes | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--db", db, *args])
    finally:
        sys.stdin = saved_stdin
    result = Result(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"billcycle {' '.join(args)} failed: {result.stderr}")
    return result


def billcycle_json(db: str, *args: str, **kwargs: Any) -> Any:
    return json.loads(billcycle(db, "--json", *args, **kwargs).stdout)


def billcycle_process(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script in its own process: exit codes and stdout as a shell sees."""
    script = f"{sys.prefix}/bin/billcycle"
    return subprocess.run([script, "--db", db, *args], capture_output=True, text=True,
                          timeout=300)


def jsonl(*messages: dict[str, Any] | str) -> bytes:
    return b"".join(
        (m if isinstance(m, str) else json.dumps(m)).encode() + b"\n" for m in messages
    )
