"""Apache Kafka's jars, fetched once from Maven Central by infra/kafka/pom.xml.

`python -m infra.kafka_jars` fetches them (infra/test does so before the tests) and prints
the directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from infra.launcher import ServiceError, local_dir, require_binary

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
STAMP = ".complete"


def default_libs_dir() -> Path:
    override = os.environ.get("BILLCYCLE_KAFKA_LIBS")
    return Path(override) if override else local_dir() / "kafka-libs"


def ensure_jars(libs_dir: Path | None = None) -> Path:
    """The directory of Kafka's jars; runs Maven into it unless a complete fetch is there.

    A fetch is complete when its stamp holds the hash of the pom that made it, so editing
    the pom (a new Kafka version) fetches again. A directory named by BILLCYCLE_KAFKA_LIBS
    that already has the broker and tools jars (say, a Kafka distribution's libs/) is used
    as it is.
    """
    target = (libs_dir or default_libs_dir()).resolve()
    if _is_complete(target) or (
        "BILLCYCLE_KAFKA_LIBS" in os.environ and libs_dir is None and _has_kafka_jars(target)
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs starting together must not both write the same directory.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_complete(target):
            _fetch(target)
    return target


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _is_complete(directory: Path) -> bool:
    stamp = directory / STAMP
    return stamp.is_file() and stamp.read_text().strip() == _pom_hash()


def _has_kafka_jars(directory: Path) -> bool:
    return any(directory.glob("kafka_2.13-*.jar")) and any(directory.glob("kafka-tools-*.jar"))


def _fetch(target: Path) -> None:
    mvn = require_binary("mvn", "install Maven (Debian: apt-get install maven)")
    # Fetch beside the target, then swap it in: an interrupted fetch leaves no half directory
    # that looks usable.
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [
            mvn, "-B", "-q", "-f", str(POM),
            "dependency:copy-dependencies", f"-DoutputDirectory={partial}",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not _has_kafka_jars(partial):
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        raise ServiceError(
            f"Maven could not fetch the Kafka jars (exit {done.returncode}) with {POM}:\n"
            + "\n".join(output)
        )
    (partial / STAMP).write_text(_pom_hash() + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


if __name__ == "__main__":
    print(ensure_jars())
