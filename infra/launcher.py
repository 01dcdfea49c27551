"""Helpers shared by the local PostgreSQL and Kafka launchers."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServiceError(RuntimeError):
    """A local service could not be set up, started or stopped."""


def local_dir() -> Path:
    """Where services and caches live: `<repo>/.local`, or ~/.cache/billcycle outside a clone."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".local"
    return Path.home() / ".cache" / "billcycle"


def free_port(exclude: Iterable[int] = ()) -> int:
    """A loopback TCP port nobody listens on right now.

    The port is only free at the time of asking; services started right after take it.
    """
    taken = set(exclude)
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_binary(name: str, hint: str) -> str:
    """The full path of an executable on PATH, or a ServiceError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} not found on PATH; {hint}")
    return path


def is_root() -> bool:
    return os.geteuid() == 0


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages; empty when there is no file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    abort: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll `ready` until it returns True; fail after `timeout` s or when `abort` gives a reason."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        reason = abort()
        if reason is not None:
            raise ServiceError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(interval)
