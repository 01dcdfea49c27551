"""Drive the real `billcycle` console entry point in a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def billcycle(db: str, *args: str, cwd: Path | None = None, check: bool = True,
              stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BILLCYCLE_DB": db}
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"billcycle {' '.join(args)} failed: {result.stderr}")
    return result


def billcycle_json(db: str, *args: str, **kwargs: Any) -> Any:
    result = billcycle(db, "--json", *args, **kwargs)
    return json.loads(result.stdout)


def jsonl(*messages: dict[str, Any] | str) -> bytes:
    return b"".join(
        (m if isinstance(m, str) else json.dumps(m)).encode() + b"\n" for m in messages
    )
