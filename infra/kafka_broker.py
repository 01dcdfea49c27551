"""A single-node Apache Kafka (KRaft) broker on loopback, for tests and local development.

The broker runs from the jars that infra/kafka/pom.xml fetches (see infra.kafka_jars), as a
child JVM; no Docker, no Kafka tarball.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from infra.kafka_jars import KAFKA_DIR, ensure_jars
from infra.launcher import (
    ServiceError,
    free_port,
    port_in_use,
    require_binary,
    tail,
    wait_until,
)

__all__ = ["LocalKafka", "ensure_jars"]

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
CONSOLE_CONSUMER_MAIN = "org.apache.kafka.tools.consumer.ConsoleConsumer"


def new_cluster_id() -> str:
    """A KRaft cluster id, as `kafka-storage random-uuid` prints it, without starting a JVM."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids these too: they read as a CLI flag.
            return text


class LocalKafka:
    """One JVM that is both KRaft controller and broker, with its files in `base_dir`.

    `base_dir` belongs to the broker: `config/`, `data/` (the log dir), `logs/server.log`,
    `kafka.out` (the JVM's own output) and `kafka.pid`. stop() deletes them unless
    `keep_data`; restart() keeps them. `detach=True` lets the broker outlive this process
    (infra/dev); otherwise the kernel stops it when the thread that started it ends, so
    start it from the main thread (as pytest fixtures are) unless that is what you want.
    """

    def __init__(
        self,
        base_dir: Path | str,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        libs_dir: Path | None = None,
        heap: str = "512m",
        keep_data: bool = False,
        detach: bool = False,
        start_timeout: float = 120.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.port = port if port is not None else free_port()
        self.controller_port = (
            controller_port if controller_port is not None else free_port(exclude={self.port})
        )
        self.heap = heap
        self.keep_data = keep_data
        self.detach = detach
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._libs_dir = libs_dir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.base_dir / "config" / "server.properties"

    @property
    def log_dir(self) -> Path:
        """Kafka's data: topic partitions and the KRaft metadata log."""
        return self.base_dir / "data"

    @property
    def server_log(self) -> Path:
        return self.base_dir / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "kafka.pid"

    @property
    def libs_dir(self) -> Path:
        if self._libs_dir is None:
            self._libs_dir = ensure_jars()
        return self._libs_dir

    def __enter__(self) -> LocalKafka:
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
        """Format the log dir if it is new, start the broker and wait until it answers."""
        if self.pid() is not None:
            raise ServiceError(f"Kafka in {self.base_dir} is already running")
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise ServiceError(f"port {port} is already in use; pick another port")
        self._write_config()
        if not (self.log_dir / "meta.properties").exists():
            self._format()
        self._launch()

    def stop(self) -> None:
        """Stop the broker; delete its files unless keep_data."""
        self._halt(graceful=True)
        if not self.keep_data:
            for name in ("config", "data", "logs"):
                shutil.rmtree(self.base_dir / name, ignore_errors=True)
            (self.base_dir / "kafka.out").unlink(missing_ok=True)
            if self.base_dir.exists() and not any(self.base_dir.iterdir()):
                self.base_dir.rmdir()

    def restart(self, *, hard: bool = False, down_for: float = 0.0) -> None:
        """Stop and start on the same log dir, `down_for` seconds later; hard=True kills the
        JVM, as a crash would."""
        self._halt(graceful=not hard)
        time.sleep(down_for)
        self._launch()

    def is_running(self) -> bool:
        return self.pid() is not None

    def pid(self) -> int | None:
        """The broker's process id, from this object or from the pid file of an earlier one."""
        if self._process is not None:
            return self._process.pid if self._process.poll() is None else None
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if _is_our_broker(pid, self.config_file) else None

    def java_cmd(self, main_class: str, *args: str, heap: str = "256m") -> list[str]:
        """A java command line running `main_class` from the Kafka jars, logging to stderr."""
        return [
            _java(),
            f"-Xmx{heap}",
            # Tools run for seconds: the quick C1 compiler and the serial collector start
            # them about a third faster.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'tools-log4j2.properties'}",
            "-cp", f"{self.libs_dir}/*",  # java expands the wildcard itself
            main_class, *args,
        ]  # fmt: skip

    def console_consumer_cmd(
        self,
        topic: str,
        *,
        from_beginning: bool = True,
        max_messages: int | None = None,
        timeout_ms: int | None = 15000,
        isolation_level: str = "read_committed",
        group: str | None = None,
        print_key: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> list[str]:
        """The command line of Apache Kafka's own console consumer on `topic`.

        It prints one value per line on stdout and exits after `max_messages`, or after
        `timeout_ms` without a message (exit code 0 in both cases).
        """
        args = ["--bootstrap-server", self.bootstrap, "--topic", topic]
        args += ["--isolation-level", isolation_level]
        if from_beginning:
            args.append("--from-beginning")
        if max_messages is not None:
            args += ["--max-messages", str(max_messages)]
        if timeout_ms is not None:
            args += ["--timeout-ms", str(timeout_ms)]
        if group is not None:
            args += ["--group", group]
        if print_key:
            args += ["--formatter-property", "print.key=true"]
        return self.java_cmd(CONSOLE_CONSUMER_MAIN, *args, *extra_args)

    def _write_config(self) -> None:
        template = (KAFKA_DIR / "server.properties.template").read_text()
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            template.format(
                port=self.port, controller_port=self.controller_port, log_dir=self.log_dir
            )
        )

    def _format(self) -> None:
        # Kafka 4.x: `--standalone` makes this node the whole (dynamic) controller quorum.
        command = self.java_cmd(
            STORAGE_TOOL_MAIN, "format",
            "--cluster-id", new_cluster_id(),
            "--config", str(self.config_file),
            "--standalone",
        )  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(
                f"kafka-storage format of {self.log_dir} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )

    def _launch(self) -> None:
        command = [
            _java(),
            f"-Xms{min_heap(self.heap)}", f"-Xmx{self.heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            *self._class_sharing_flags(),
            f"-Dkafka.logs.dir={self.base_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp", f"{self.libs_dir}/*",
            BROKER_MAIN, str(self.config_file),
        ]  # fmt: skip
        setpriv = shutil.which("setpriv")
        if not self.detach and setpriv:
            # The kernel sends SIGTERM to the JVM when we die, even by SIGKILL: no stray
            # brokers holding ports and 512 MB after an aborted test run.
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        (self.base_dir / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.base_dir / "kafka.out", "ab") as out:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=self.detach,  # the dev shell's Ctrl-C must not reach it
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            wait_until(
                self._answers,
                timeout=self.start_timeout,
                interval=0.5,
                what=f"Kafka broker on {self.bootstrap}",
                abort=self._exited,
            )
        except ServiceError as error:
            self._halt(graceful=False)
            log = tail(self.server_log)
            raise ServiceError(f"{error}; end of {self.server_log}:\n{log}") from None

    @property
    def _class_archive(self) -> Path:
        return self.libs_dir / "broker-classes.jsa"

    @property
    def _partial_class_archive(self) -> Path:
        # Named after base_dir so that `infra/dev down`, a new process, finds it.
        key = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
        return self.libs_dir / f"broker-classes.jsa.partial-{key}"

    def _class_sharing_flags(self) -> list[str]:
        """JVM flags mapping the classes an earlier broker loaded, instead of parsing jars.

        This cuts a broker start by about 40% (7 s instead of 11 s on two busy cores). The
        first broker records the archive when it stops gracefully; the JVM ignores, with a
        warning in kafka.out, an archive that no longer matches the jars or the JDK.
        """
        if self._class_archive.is_file():
            return [f"-XX:SharedArchiveFile={self._class_archive}"]
        if os.access(self.libs_dir, os.W_OK):
            return [f"-XX:ArchiveClassesAtExit={self._partial_class_archive}"]
        return []

    def _keep_class_archive(self, complete: bool) -> None:
        partial = self._partial_class_archive
        if not partial.is_file():
            return
        if complete and partial.stat().st_size > 0 and not self._class_archive.exists():
            partial.rename(self._class_archive)
        else:
            partial.unlink(missing_ok=True)

    def _exited(self) -> str | None:
        if self._process is None or self._process.poll() is None:
            return None
        output = tail(self.base_dir / "kafka.out", 5)
        return f"the JVM exited with code {self._process.returncode}: {output}"

    def _answers(self) -> bool:
        """True once the broker is registered, unfenced and serving metadata."""
        if not port_in_use(self.port):
            return False
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                request_timeout_ms=5000,
                client_id="billcycle-infra-probe",
            )
        except KafkaError:
            return False
        try:
            return bool(admin.describe_cluster()["brokers"])
        except KafkaError:
            return False
        finally:
            admin.close()

    def _halt(self, *, graceful: bool) -> None:
        pid = self.pid()
        if pid is not None:
            # SIGTERM runs Kafka's controlled shutdown, which flushes and closes the logs.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
            exited = self._wait_exit(pid, self.stop_timeout if graceful else 10.0)
            if not exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
            self._keep_class_archive(complete=graceful and exited)
        self._process = None
        self.pid_file.unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._process is not None:
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, so an idle broker stays small."""
    digits = heap.rstrip("kKmMgG")
    unit = heap[len(digits) :] or ""
    return f"{max(int(digits) // 4, 1)}{unit}"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return require_binary("java", "install Java 17+ (Debian: apt-get install default-jre-headless)")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def _is_our_broker(pid: int, config_file: Path) -> bool:
    """True when `pid` is alive and is the broker of `config_file` (pids get reused)."""
    if not _alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return BROKER_MAIN.encode() in argv and str(config_file).encode() in argv
