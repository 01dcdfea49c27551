"""Helpers for the Kafka tests: topics of their own per test, a plain producer, the CLI as a
child process, and reading a topic back (read_committed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.kafka_source import Topics
from domain.application import BillingApplication
from infra.store.url import store_env

PARTITIONS = {"contracts": 2, "usage": 3, "payments": 1, "invoices": 3, "deadletter": 1}


def new_topics(bootstrap: str) -> Topics:
    """Topics of this test's own, created with several partitions each."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics(**{name: f"{prefix}.billing.{name}" for name in PARTITIONS})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([
            NewTopic(getattr(topics, name), count, 1) for name, count in PARTITIONS.items()
        ])
    finally:
        admin.close()
    return topics


def producer(bootstrap: str) -> Any:
    """A plain producer, as any other service would use (idempotent, so retries add nothing)."""
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, batch_size=256 * 1024,
                         delivery_timeout_ms=180000, reconnect_backoff_max_ms=1000)


def produce(bootstrap: str, topic: str,
            messages: Iterable[tuple[str | None, bytes | None]]) -> int:
    """Send (key, value) pairs (a value None: a tombstone) and wait until all are
    acknowledged; how many."""
    sender = producer(bootstrap)
    try:
        futures = [sender.send(topic, key=k.encode() if k else None, value=v) for k, v in messages]
        sender.flush()
        for future in futures:
            future.get(timeout=60)
        return len(futures)
    finally:
        sender.close()


def as_json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def contract(n: int, unit_amount: str = "0.01") -> dict[str, Any]:
    return {
        "type": "contract.created", "id": f"c-{n}", "occurred_at": "2026-10-01T00:00:00Z",
        "contract_id": f"ct_{n}", "customer_id": f"cus_{n}", "currency": "USD",
        "start_date": "2026-10-01", "billing_frequency": "monthly",
        "components": [
            {"id": "platform", "kind": "subscription", "amount": "100.00"},
            {"id": "api", "kind": "usage", "metric": "api_calls",
             "pricing": {"model": "per_unit", "unit_amount": unit_amount}},
        ],
    }


@dataclass
class UsageLedger:
    """Usage messages made for a test, and what each customer should total."""

    totals: dict[str, Decimal] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    made: int = 0

    def make(self, customers: int, count: int, tag: str = "u") -> list[tuple[str, bytes]]:
        messages = []
        for _ in range(count):
            n = self.made
            self.made += 1
            customer = f"cus_{n % customers}"
            quantity = Decimal(n % 97) / 4  # 0 .. 24, with fractions
            self.totals[customer] = self.totals.get(customer, Decimal(0)) + quantity
            self.counts[customer] = self.counts.get(customer, 0) + 1
            messages.append((customer, as_json({
                "type": "usage", "id": f"{tag}-{n}", "customer_id": customer,
                "occurred_at": f"2026-10-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
                "metric": "api_calls", "quantity": str(quantity),
            })))
        return messages


def meter_totals(db: str, customers: Iterable[str]) -> tuple[dict[str, Decimal], dict[str, int]]:
    """October's api_calls of each customer, as the store counts them."""
    app = BillingApplication(env=store_env(db))
    try:
        totals, counts = {}, {}
        for customer in customers:
            reading = app.store.read_meter(
                customer, "api_calls", ["", f"ct_{customer.removeprefix('cus_')}"],
                datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC), None)
            totals[customer], counts[customer] = reading.quantity_sum, reading.event_count
        return totals, counts
    finally:
        app.close()


def cli_env(db: str, bootstrap: str, topics: Topics) -> dict[str, str]:
    env = {**os.environ, "BILLCYCLE_DB": db, "BILLCYCLE_KAFKA": bootstrap,
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    for name in PARTITIONS:
        env[f"BILLCYCLE_TOPIC_{name.upper()}"] = getattr(topics, name)
    # A group of the test's own: members of other tests' groups cannot delay its rebalances.
    env["BILLCYCLE_CONSUMER_GROUP"] = topics.usage.partition(".")[0]
    return env


def billcycle(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[
        str]:
    done = subprocess.run([sys.executable, "-m", "infra.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"billcycle {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done


def billcycle_json(env: dict[str, str], *args: str, timeout: float = 120) -> Any:
    return json.loads(billcycle(env, "--json", *args, timeout=timeout).stdout)


# Every child start() made, so that none outlives its test (stop_children()).
_children: list[subprocess.Popen[bytes]] = []


def start(env: dict[str, str], *args: str, log: str) -> subprocess.Popen[bytes]:
    """The CLI as a child process, its stderr appended to `log`."""
    with open(log, "ab") as err:
        child = subprocess.Popen([sys.executable, "-m", "infra.cli", *args], env=env,
                                 stdout=subprocess.DEVNULL, stderr=err)
    _children.append(child)
    return child


def stop_children() -> None:
    """Kill the children a test left running (it failed before stopping them): a consumer
    left behind keeps its database in use and retries a stopped broker for ever."""
    while _children:
        child = _children.pop()
        if child.poll() is None:
            kill(child)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def terminate(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of `topic`, partition by partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             isolation_level="read_committed", enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             log: str | Path | None = None, every: float = 0.5) -> None:
    """Wait until `check()`, asked `every` seconds; on timeout, fail with the end of `log`
    (a child's stderr)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            said = Path(log).read_text(errors="replace")[-LOG_TAIL:] if log else ""
            raise AssertionError(f"timed out waiting for {what}"
                                 + (f"; the end of {log}:\n{said}" if log else ""))
        time.sleep(every)


LOG_TAIL = 4000


# What `consume` says once it owns partitions (its progress line says "no partition assigned"
# before that, so "assigned" alone matches too soon).
JOINED = "billcycle consume: assigned "
# How long a test waits for JOINED: a join takes a second or two, and one that is stuck is
# started again after a minute (`consume --rejoin-after`).
JOIN_WAIT = 120.0


def mentions(path: Path, text: str) -> Callable[[], bool]:
    """A check for wait_for: the file at `path` contains `text`."""
    return lambda: path.exists() and text in path.read_text()
