"""A throwaway PostgreSQL cluster on loopback, for tests and local development."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from infra.launcher import ServiceError, free_port, is_root, port_in_use, tail, wait_until

DEFAULT_DATABASE = "billcycle"
SUPERUSER = "postgres"

ShutdownMode = Literal["smart", "fast", "immediate"]


def find_bin_dir() -> Path:
    """The directory of initdb and pg_ctl: $BILLCYCLE_PG_BIN, Debian's newest, or PATH."""
    override = os.environ.get("BILLCYCLE_PG_BIN")
    if override:
        candidates = [Path(override)]
    else:
        # Debian keeps server binaries off PATH, one directory per major version.
        debian = Path("/usr/lib/postgresql").glob("*/bin")
        candidates = sorted(debian, key=lambda p: _major(p.parent.name), reverse=True)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    looked = ", ".join(str(c) for c in candidates) or "/usr/lib/postgresql/*/bin and PATH"
    raise ServiceError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found (looked in {looked}); "
        "install them (Debian: apt-get install postgresql) or set BILLCYCLE_PG_BIN"
    )


def _major(name: str) -> int:
    return int(name) if name.isdigit() else -1


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def create_database(admin_url: str, database: str) -> str:
    """Create `database` on the server of `admin_url` if missing; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(admin_url, database)


def drop_database(admin_url: str, database: str) -> None:
    """Drop `database`, disconnecting whoever still uses it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


class LocalPostgres:
    """A PostgreSQL cluster of its own in `base_dir`, listening on 127.0.0.1 only.

    `base_dir` belongs to the cluster: it holds `data/` and `postgres.log`, which stop()
    deletes unless `keep_data`. restart() always keeps them. With `fast`, fsync and
    full_page_writes are off: data survives a restart or a killed server, not a machine crash.
    `synchronous_commit=False` also loses the last commits when the server is killed, so
    leave it on for crash tests.
    """

    def __init__(
        self,
        base_dir: Path | str,
        port: int | None = None,
        *,
        fast: bool = False,
        synchronous_commit: bool = True,
        keep_data: bool = False,
        max_connections: int = 200,
        database: str = DEFAULT_DATABASE,
        start_timeout: float = 60.0,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.port = port if port is not None else free_port()
        self.fast = fast
        self.synchronous_commit = synchronous_commit
        self.keep_data = keep_data
        self.max_connections = max_connections
        self.database = database
        self.start_timeout = start_timeout
        self._bin_dir: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database `postgres`, for CREATE/DROP DATABASE."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return with_database(self.admin_url, self.database)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Create the cluster if needed, start it and make sure the database exists."""
        self._bin()  # fail first, and clearly, when PostgreSQL is not installed
        if self.is_running():
            raise ServiceError(f"PostgreSQL in {self.data_dir} is already running")
        if port_in_use(self.port):
            raise ServiceError(f"port {self.port} is already in use; pick another port")
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._write_settings()
        self._launch()
        create_database(self.admin_url, self.database)

    def stop(self) -> None:
        """Stop the server; delete its files unless keep_data."""
        self._halt("fast")
        if not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_file.unlink(missing_ok=True)
            # Only our own files go; the directory stays when the caller put others in it.
            if self.base_dir.exists() and not any(self.base_dir.iterdir()):
                self.base_dir.rmdir()

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop and start again on the same data; mode="immediate" simulates a crash."""
        self._halt(mode)
        self._launch()

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no usable data directory.
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False) == 0

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if not is_root():
            return
        # initdb refuses root: the server runs as the postgres OS user, which must own its
        # files and be able to reach them.
        shutil.chown(self.base_dir, SUPERUSER, SUPERUSER)
        probe = subprocess.run(
            ["runuser", "-u", SUPERUSER, "--", "test", "-w", str(self.base_dir)],
            check=False,
        )
        if probe.returncode != 0:
            raise ServiceError(
                f"the postgres OS user cannot write to {self.base_dir} (is a parent directory "
                "closed to other users?); use a base directory under /tmp"
            )

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",  # only 127.0.0.1 can connect: see _write_settings
            "--encoding=UTF8",
            "--no-locale",  # C collation: the same ordering on every machine
            "--no-sync",
            "--no-instructions",
        )  # fmt: skip

    def _write_settings(self) -> None:
        # postgresql.auto.conf is read last and rewritten whole, so a restart with other
        # options never piles up settings.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            # No Unix socket: nothing collides in /var/run/postgresql, no path-length limit.
            "unix_socket_directories": "''",
            "max_connections": str(self.max_connections),
            "fsync": "off" if self.fast else "on",
            "full_page_writes": "off" if self.fast else "on",
            "synchronous_commit": "on" if self.synchronous_commit else "off",
            "timezone": "'UTC'",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        auto_conf = self.data_dir / "postgresql.auto.conf"
        auto_conf.write_text("# Written by infra/postgres.py on every start.\n" + text)
        if is_root():
            shutil.chown(auto_conf, SUPERUSER, SUPERUSER)

    def _launch(self) -> None:
        code = self._run(
            "pg_ctl", "start",
            "-D", str(self.data_dir),
            "-l", str(self.log_file),
            "-w", "-t", str(int(self.start_timeout)),
            "-s",
            check=False,
        )  # fmt: skip
        if code != 0:
            raise ServiceError(
                f"PostgreSQL in {self.data_dir} did not start (pg_ctl exit {code}); "
                f"end of {self.log_file}:\n{tail(self.log_file)}"
            )
        wait_until(
            self._accepts_connections,
            timeout=self.start_timeout,
            what=f"PostgreSQL on port {self.port}",
        )

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _halt(self, mode: ShutdownMode) -> None:
        if not self.is_running():
            return
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-s")

    def _bin(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def _run(self, tool: str, *args: str, check: bool = True) -> int:
        """Run a server binary as the postgres user when we are root; return its exit code."""
        command = [str(self._bin() / tool), *args]
        if is_root():
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        # cwd: the postgres user may not be allowed into ours (e.g. /root).
        done = subprocess.run(
            command, cwd=self.base_dir, capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise ServiceError(
                f"{tool} {' '.join(args)} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.returncode
