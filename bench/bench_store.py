"""Write throughput of the store adapters: 10,000 usage increments over 500 meter keys per save.

Prints increments/s for SQLite (a temp file) and PostgreSQL (a throwaway local cluster, or
--postgres-url), in three shapes:
  meters only   one small event carrying the whole batch: the cost of folding and upserting
  events only   one UsageBatch of 10,000 usage records and their message ids, no meters
  with events   the same and the increments: a realistic ingest batch
The first save of a run inserts the buckets; the repeats update them (ON CONFLICT / merge).

    .venv/bin/python -m bench.bench_store [--postgres-url URL] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from uuid import UUID, uuid4

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from domain.usage import MeterIncrement, RecordedUsage, UsageBatch, usage_record
from infra.postgres import LocalPostgres, create_database
from infra.store.batch import StoreBatch
from infra.store.url import store_env

INCREMENTS = 10_000
CUSTOMERS = 50
BUCKETS = 10  # 50 customers x 10 buckets = 500 keys
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def usage_events(run: int) -> list[RecordedUsage]:
    return [
        RecordedUsage(
            message_id=f"r{run}-m{i}",
            fingerprint="f",
            customer_id=f"cus_{i % CUSTOMERS}",
            metric="api_calls",
            quantity=Decimal("0.125") * (i % 7 + 1),
            occurred_at=T0 + timedelta(minutes=15 * (i // CUSTOMERS % BUCKETS), seconds=i % 900),
            properties={"user": f"u{i % 1000}", "region": f"r{i % 5}"},
            contract_id=None,
        )
        for i in range(INCREMENTS)
    ]


def increments(events: list[RecordedUsage]) -> list[MeterIncrement]:
    return [e.increment() for e in events]


def usage_batch(events: list[RecordedUsage]) -> UsageBatch:
    return UsageBatch([
        usage_record(e.message_id, e.fingerprint, e.customer_id, e.metric, e.quantity,
                     e.occurred_at, json.dumps(e.properties, sort_keys=True), e.contract_id)
        for e in events
    ])


def measure(url: str, repeat: int) -> None:
    app = Application[UUID](env=store_env(url))
    try:
        for number, shape in enumerate(("meters only", "events only", "with events")):
            saves, folds = [], []
            for run in range(repeat):
                events = usage_events(number * 1000 + run)
                batch = increments(events) if shape != "events only" else []
                aggregate = Aggregate() if shape == "meters only" else usage_batch(events)
                messages = [] if shape == "meters only" else [
                    (e.message_id, e.fingerprint) for e in events]
                # The save folds the batch itself; folding is timed apart to show its share.
                folds.append(timed(partial(StoreBatch.of, batch, [])))
                saves.append(timed(partial(app.save, aggregate, meter_increments=batch,
                                           messages=messages)))
            rates = ", ".join(f"{INCREMENTS / s:,.0f}" for s in saves)
            print(
                f"  {shape:12} best {INCREMENTS / min(saves):>7,.0f}/s ({rates}); "
                f"best save {1000 * min(saves):.0f} ms, of which folding {1000 * min(folds):.0f} ms"
            )
    finally:
        app.close()


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextmanager
def postgres_url(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with LocalPostgres(tempfile.mkdtemp(prefix="billcycle-bench-pg-")) as pg:
        yield create_database(pg.admin_url, f"bench_{uuid4().hex[:8]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{INCREMENTS:,} increments over {CUSTOMERS * BUCKETS} keys per save, increments/s:")
    with tempfile.TemporaryDirectory() as tmp:
        print("SQLite (file, WAL)")
        measure(f"sqlite:///{Path(tmp) / 'bench.db'}", args.repeat)
    with postgres_url(args.postgres_url) as url:
        print("PostgreSQL 15 (local cluster, fsync on)")
        measure(url, args.repeat)


if __name__ == "__main__":
    main()
