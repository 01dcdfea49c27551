"""The bare baselines, each run as a child process like the billcycle step it is compared with.

    python -m bench.baselines kafka --bootstrap HOST:PORT --topic T [--no-check-crcs]
        a bare kafka-python consumer: reads every committed record of T and decodes its JSON
    python -m bench.baselines select --db postgresql://... --topics T1,T2 [--topics T3 ...]
        a bare psycopg SELECT of the stored events of those topics, in pages as a replay reads

Each prints one JSON document: {"records": N, "seconds": S} (S from the first request to the
last record, without the interpreter's start).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from infra.store.url import store_env

# The same fetch settings as billcycle's inbound consumer (consumers/kafka_source.py), so the
# ratio measures what billcycle does with the records, not how they are fetched.
FETCH = {
    "max_poll_records": 2000,
    "fetch_min_bytes": 64 * 1024,
    "fetch_max_wait_ms": 100,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 64 * 1024 * 1024,
}
PAGE_SIZE = 5000  # the replay's page (projections/runner.py DEFAULT_PAGE_SIZE)


def bare_consumer(bootstrap: str, topic: str, check_crcs: bool = True) -> dict[str, float]:
    """Read `topic` from its beginning to its end offsets and json.loads every value."""
    from kafka import KafkaConsumer, TopicPartition

    started = time.perf_counter()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, isolation_level="read_committed",
                             check_crcs=check_crcs, **FETCH)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records = 0
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    json.loads(record.value)
                records += len(batch)
        return {"records": records, "seconds": time.perf_counter() - started}
    finally:
        consumer.close()


def bare_select(url: str, topic_sets: Sequence[Sequence[str]]) -> dict[str, float]:
    """Fetch the stored events of each topic set through psycopg, as the replay pages them."""
    import psycopg

    env = store_env(url)
    started = time.perf_counter()
    records = 0
    with psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
                         dbname=env["POSTGRES_DBNAME"], user=env["POSTGRES_USER"],
                         password=env["POSTGRES_PASSWORD"]) as conn:
        for topics in topic_sets:
            after = 0
            while True:
                rows = conn.execute(
                    "SELECT notification_id, originator_id, originator_version, topic, state"
                    " FROM billcycle_events WHERE notification_id > %s AND topic = ANY(%s)"
                    " ORDER BY notification_id LIMIT %s",
                    (after, list(topics), PAGE_SIZE),
                ).fetchall()
                records += len(rows)
                if len(rows) < PAGE_SIZE:
                    break
                after = rows[-1][0]
    return {"records": records, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = parser.add_subparsers(dest="which", required=True)
    kafka = sub.add_parser("kafka", help="bare kafka-python consumer decoding JSON")
    kafka.add_argument("--bootstrap", required=True)
    kafka.add_argument("--topic", required=True)
    kafka.add_argument("--no-check-crcs", action="store_true",
                       help="skip the CRC-32C check of record batches (kafka-python computes "
                       "it in pure Python unless the crc32c package is installed)")
    select = sub.add_parser("select", help="bare SELECT of stored events through psycopg")
    select.add_argument("--db", required=True)
    select.add_argument("--topics", action="append", required=True,
                        help="comma-separated topics read together (repeatable)")
    args = parser.parse_args(argv)
    if args.which == "kafka":
        result = bare_consumer(args.bootstrap, args.topic, not args.no_check_crcs)
    else:
        result = bare_select(args.db, [t.split(",") for t in args.topics])
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
