"""The bare baselines, each run as a child process like the billcycle step it is compared with.

    python -m bench.baselines kafka --bootstrap HOST:PORT --topic T [--no-check-crcs]
        a bare kafka-python consumer: reads every committed record of T and decodes its JSON
    python -m bench.baselines exactly-once --bootstrap HOST:PORT --topic T --db postgresql://...
            [--batch-size 2000] [--writer-thread]
        a bare exactly-once consumer into PostgreSQL: the same reads and json.loads, then per
        batch of a partition one transaction that stores one row per record by binary COPY and
        the partition's offset (see exactly_once)
    python -m bench.baselines select --db postgresql://... --topics T1,T2 [--topics T3 ...]
        a bare psycopg SELECT of the stored events of those topics, in pages as a replay reads
    python -m bench.baselines view-rows --db postgresql://... --manifest FILE [--connections 2]
        the rows of a replay's views written back by binary COPY, from files prepared by
        prepare_view_rows() (the parent calls it in process, outside the measured child)
    python -m bench.baselines replay-floor --db postgresql://... --topics T1,T2 [--processes 2]
            [--bounds 0,P,END]
        the least a replay through billcycle's store does: its events read, each decoded by the
        store's mapper, one row each written, nothing computed; the log shared among
        interpreters (see replay_floor)

Each prints one JSON document: {"records": N, "seconds": S, ...} (S from the first request to
the last record, without the interpreter's start).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

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
INGEST_BATCH = 2000  # consume's default batch (consumers/pipeline.py DEFAULT_BATCH)
VIEW_ROWS_SCHEMA = "bench_view_rows"  # where the view-rows baseline writes its copies
FLOOR_SCHEMA = "bench_replay_floor"  # where the replay floor writes its rows


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


# --- the bare exactly-once consumer into PostgreSQL -----------------------------------------------

_RECORDS_TABLE = (
    "CREATE TABLE IF NOT EXISTS bare_usage (message_id text PRIMARY KEY, customer_id text,"
    " metric text, quantity numeric, occurred_at timestamptz, value bytea)"
)
_OFFSETS_TABLE = (
    "CREATE TABLE IF NOT EXISTS bare_offsets (topic text, partition integer, last_offset bigint,"
    " PRIMARY KEY (topic, partition))"
)
_COPY_RECORDS = (
    "COPY bare_usage (message_id, customer_id, metric, quantity, occurred_at, value)"
    " FROM STDIN (FORMAT BINARY)"
)
_RECORD_TYPES = ("text", "text", "text", "numeric", "timestamptz", "bytea")
_UPSERT_OFFSET = (
    "INSERT INTO bare_offsets VALUES (%s, %s, %s) ON CONFLICT (topic, partition)"
    " DO UPDATE SET last_offset = excluded.last_offset"
)

Row = tuple[Any, ...]


def usage_rows(records: Sequence[Any]) -> list[Row]:
    """One row per record, each message id once: json.loads and the typed columns, nothing
    checked. The book resends some messages (the same bytes at the next offset): kept once,
    as the primary key wants; a resend split across two batches is left to store()."""
    rows: dict[Any, Row] = {}
    for record in records:
        m = json.loads(record.value)
        quantity, occurred_at = m.get("quantity"), m.get("occurred_at")
        key = m.get("id")
        if key is not None and key not in rows:
            rows[key] = (key, m.get("customer_id"), m.get("metric"),
                         None if quantity is None else Decimal(quantity),
                         None if occurred_at is None else datetime.fromisoformat(occurred_at),
                         record.value)
    return list(rows.values())


def exactly_once(url: str, bootstrap: str, topic: str, batch_size: int = INGEST_BATCH,
                 writer_thread: bool = False) -> dict[str, Any]:
    """Read `topic` to its end offsets into PostgreSQL, exactly once: per batch of a partition
    (at most `batch_size` records) one transaction stores one row per record by binary COPY
    into a table keyed by message id and upserts the partition's offset, committed in order.
    Positions come from the database, as billcycle's do (Kafka's committed offsets unused).
    With `writer_thread`, one thread commits batch N while the main thread polls and decodes
    batch N+1, as billcycle's consume does. No validation, no dedupe policy beyond the primary
    key, no aggregation: the least a Python consumer storing each record does."""
    import psycopg
    from kafka import KafkaConsumer, TopicPartition

    stats = {"batches": 0, "rows": 0, "batches_redone": 0}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_RECORDS_TABLE)
        conn.execute(_OFFSETS_TABLE)

        def store(partition: int, last: int, rows: list[Row]) -> None:
            try:
                write(partition, last, rows)
            except psycopg.errors.UniqueViolation:
                # A resent message whose first copy ended the previous batch: store the rest.
                stats["batches_redone"] += 1
                ids = [row[0] for row in rows]
                stored = {i for (i,) in conn.execute(
                    "SELECT message_id FROM bare_usage WHERE message_id = ANY(%s)", (ids,))}
                rows = [row for row in rows if row[0] not in stored]
                write(partition, last, rows)
            stats["batches"] += 1
            stats["rows"] += len(rows)

        def write(partition: int, last: int, rows: list[Row]) -> None:
            with conn.transaction(), conn.cursor() as curs:
                with curs.copy(_COPY_RECORDS) as copy:
                    copy.set_types(_RECORD_TYPES)
                    for row in rows:
                        copy.write_row(row)
                curs.execute(_UPSERT_OFFSET, (topic, partition, last))

        started = time.perf_counter()
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level="read_committed",
            **{**FETCH, "max_poll_records": batch_size})
        writer = ThreadPoolExecutor(1, "bare-writer") if writer_thread else None
        pending: Future[None] | None = None
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            stored_offsets: dict[int, int] = dict(conn.execute(
                "SELECT partition, last_offset FROM bare_offsets WHERE topic = %s", (topic,)
            ).fetchall())
            for tp in tps:
                if tp.partition in stored_offsets:
                    consumer.seek(tp, stored_offsets[tp.partition] + 1)
                else:
                    consumer.seek_to_beginning(tp)
            ends = consumer.end_offsets(tps)
            records = 0
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                for tp, batch in consumer.poll(timeout_ms=500).items():
                    for i in range(0, len(batch), batch_size):
                        chunk = batch[i:i + batch_size]
                        rows = usage_rows(chunk)
                        records += len(chunk)
                        if writer is None:
                            store(tp.partition, chunk[-1].offset, rows)
                            continue
                        if pending is not None:
                            pending.result()  # strictly in order, one at a time
                        pending = writer.submit(store, tp.partition, chunk[-1].offset, rows)
            if pending is not None:
                pending.result()
            seconds = time.perf_counter() - started
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            consumer.close()
        (stored_rows,) = conn.execute("SELECT count(*) FROM bare_usage").fetchone() or (0,)
    return {"records": records, "seconds": seconds, "stored": stored_rows, **stats}


# --- the bare SELECT of stored events ----------------------------------------------------------


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
                # Binary results, as billcycle reads its log (infra/store/postgres.py).
                rows = conn.cursor(binary=True).execute(
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


# --- the bare view rows: a replay's rows written back, nothing computed in Python ----------------


def prepare_view_rows(url: str, out: Path, pages: int,
                      schema: str = VIEW_ROWS_SCHEMA) -> dict[str, Any]:
    """After a replay: every view table's rows copied out (binary COPY, into files under `out`),
    and empty copies of the tables made in `schema` (empty_copies()). Returns the manifest that
    view_rows() writes, also written to out/manifest.json.

    Each table's rows are cut into `pages` parts by physical position (the order the replay
    inserted them), and the writes are grouped as the replay groups them: per page, one
    transaction per view with its part of each of the view's tables and its tracking."""
    import psycopg
    from psycopg import sql

    from projections.runner import PROJECTIONS

    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"schema": schema, "rows": 0, "tables": {}, "transactions": [],
                                "finish": empty_copies(url, schema)}
    parts: dict[str, list[dict[str, Any]]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for projection in PROJECTIONS.values():
            for table in projection.tables:
                (blocks,) = conn.execute(
                    "SELECT pg_relation_size(%s::regclass)"
                    " / current_setting('block_size')::bigint", (table.name,)).fetchone() or (0,)
                parts[table.name] = []
                for page in range(pages):
                    first, end = blocks * page // pages, blocks * (page + 1) // pages
                    if page == pages - 1:
                        end = blocks + 1  # and anything added since the size was read
                    path = out / f"{table.name}.{page}.copy"
                    with open(path, "wb") as f, conn.cursor() as curs:
                        with curs.copy(sql.SQL(
                            "COPY (SELECT * FROM {0} WHERE ctid >= {1}::tid AND ctid < {2}::tid)"
                            " TO STDOUT (FORMAT BINARY)").format(
                                sql.Identifier(table.name), f"({first},0)", f"({end},0)")
                        ) as copy:
                            for data in copy:
                                f.write(data)
                        rows = curs.rowcount
                    parts[table.name].append({"file": str(path), "rows": rows})
                manifest["tables"][table.name] = sum(p["rows"] for p in parts[table.name])
    manifest["rows"] = sum(manifest["tables"].values())
    for page in range(pages):
        for view, projection in PROJECTIONS.items():
            manifest["transactions"].append({
                "view": view, "page": page,
                "copies": [{"table": t.name, **parts[t.name][page]}
                           for t in projection.tables if parts[t.name][page]["rows"]]})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def empty_copies(url: str, schema: str = VIEW_ROWS_SCHEMA) -> list[dict[str, str]]:
    """`schema` made again with an empty copy of every view table (`LIKE ... INCLUDING ALL`)
    without the reports' indexes and the append-only tables' keys, which the replay makes
    after its load; and a tracking table. Returns those statements, each with its view."""
    import psycopg
    from psycopg import sql

    from projections.runner import PROJECTIONS

    finish = []
    scratch = sql.Identifier(schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(scratch))
        conn.execute(sql.SQL("CREATE SCHEMA {0}").format(scratch))
        conn.execute(sql.SQL("CREATE TABLE {0}.tracking (application_name text PRIMARY KEY,"
                             " notification_id bigint)").format(scratch))
        for view, projection in PROJECTIONS.items():
            for table in projection.tables:
                name = sql.Identifier(table.name)
                copy_of = sql.SQL("{0}.{1}").format(scratch, name)
                conn.execute(sql.SQL("CREATE TABLE {0} (LIKE {1} INCLUDING ALL)")
                             .format(copy_of, name))
                for index in _report_indexes(conn, schema, table.name, table.report_indexes):
                    conn.execute(sql.SQL("DROP INDEX {0}.{1}").format(
                        scratch, sql.Identifier(index)))
                if table.append_only:  # loaded without its key, as a rebuild loads it
                    key = conn.execute(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                        " WHERE conrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
                        " AND contype = 'p'", (schema, table.name)).fetchone()
                    if key is None:
                        raise RuntimeError(f"{schema}.{table.name} has no primary key to drop")
                    name_, definition = key
                    conn.execute(sql.SQL("ALTER TABLE {0} DROP CONSTRAINT {1}").format(
                        copy_of, sql.Identifier(name_)))
                    finish.append({"view": view, "statement": sql.SQL(
                        "ALTER TABLE {0} ADD CONSTRAINT {1} " + definition).format(
                        copy_of, sql.Identifier(name_)).as_string(conn)})
                finish += [{"view": view, "statement": sql.SQL("CREATE INDEX ON {0} ({1})").format(
                    copy_of, sql.SQL(", ").join(map(sql.Identifier, columns))).as_string(conn)}
                    for columns in table.report_indexes]
    return finish


def _report_indexes(conn: Any, schema: str, table: str,
                    wanted: Sequence[Sequence[str]]) -> list[str]:
    """The indexes of schema.table over exactly one of the `wanted` column lists."""
    found = conn.execute(
        "SELECT c.relname, array_agg(a.attname ORDER BY k.n) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
        " AND NOT i.indisprimary GROUP BY c.relname", (schema, table)).fetchall()
    return [name for name, columns in found if tuple(columns) in map(tuple, wanted)]


def view_rows(url: str, manifest: dict[str, Any], connections: int = 1) -> dict[str, Any]:
    """Write the prepared rows into the empty copies as the replay writes its views: binary
    COPY of bytes already formatted, one transaction per view and page with its tracking
    upserted, in page order, then the reports' indexes, one transaction each.

    With one connection, as the replay does (its writer thread writes one view at a time).
    With more, the views are shared among them (each view's pages still in order on one
    connection): what the server could do with both cores writing rows."""
    import psycopg
    from psycopg import sql

    schema = sql.Identifier(manifest["schema"])
    tracking = sql.SQL(
        "INSERT INTO {0}.tracking VALUES (%s, %s) ON CONFLICT (application_name)"
        " DO UPDATE SET notification_id = excluded.notification_id").format(schema)
    views = list(dict.fromkeys(t["view"] for t in manifest["transactions"]))
    share = {view: n % connections for n, view in enumerate(views)}
    loaded = [0.0] * connections

    def write(n: int, started: float) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for transaction in manifest["transactions"]:
                if share[transaction["view"]] != n:
                    continue
                with conn.transaction(), conn.cursor() as curs:
                    for part in transaction["copies"]:
                        with curs.copy(sql.SQL("COPY {0}.{1} FROM STDIN (FORMAT BINARY)")
                                       .format(schema, sql.Identifier(part["table"]))) as copy, \
                                open(part["file"], "rb") as f:
                            while data := f.read(1 << 20):
                                copy.write(data)
                    curs.execute(tracking, (transaction["view"], transaction["page"]))
            loaded[n] = time.perf_counter() - started
            for index in manifest["finish"]:
                if share.get(index["view"], 0) == n:
                    with conn.transaction():
                        conn.execute(index["statement"])

    started = time.perf_counter()
    with ThreadPoolExecutor(connections, "view-rows") as pool:
        for done in [pool.submit(write, n, started) for n in range(connections)]:
            done.result()
    seconds = time.perf_counter() - started
    return {"records": manifest["rows"], "seconds": seconds, "copy_seconds": max(loaded),
            "connections": connections, "transactions": len(manifest["transactions"])}


# --- the replay floor: the events read and decoded, one row each written -------------------------

_FLOOR_SHARES = """
    WITH read AS (
        SELECT notification_id, sum(length(state)) OVER (ORDER BY notification_id) AS upto,
               sum(length(state)) OVER () AS total
        FROM billcycle_events WHERE topic = ANY(%(topics)s))
    SELECT k, min(notification_id) FROM read, generate_series(1, %(n)s - 1) AS k
    WHERE upto * %(n)s >= total * k GROUP BY k ORDER BY k"""


def prepare_replay_floor(url: str, topics: Sequence[str], processes: int = 2) -> list[int]:
    """Before replay_floor(), not measured: its tables made (empty) and the log shared among
    `processes` interpreters by the stored size of the events of `topics`: the log positions
    [0, ..., end], share k reading the events after bounds[k] through bounds[k + 1]. A
    replay cannot know this split beforehand (it costs a scan of the log): the floor's own."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {FLOOR_SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {FLOOR_SCHEMA}")
        conn.execute(f"CREATE TABLE {FLOOR_SCHEMA}.rows (position bigint, topic text)")
        conn.execute(f"CREATE TABLE {FLOOR_SCHEMA}.tracking (share integer PRIMARY KEY,"
                     " notification_id bigint)")
        (end,) = conn.execute("SELECT coalesce(max(notification_id), 0)"
                              " FROM billcycle_events").fetchone() or (0,)
        cuts = [at for _, at in conn.execute(_FLOOR_SHARES,
                                             {"topics": list(topics), "n": processes})]
    return [0, *(at - 1 for at in cuts), end]


def replay_floor(url: str, topics: Sequence[str], bounds: Sequence[int]) -> dict[str, Any]:
    """The least a replay of billcycle's views does in Python, on one interpreter per share of
    the log (`bounds`, from prepare_replay_floor(): this one and the others it starts): read
    the stored events of `topics` in pages of the replay's size by a binary cursor, decode each
    event's state by billcycle's own transcoder (its parser and typed values: dates, Decimals,
    timestamps; no domain objects built), and write one row per event (position, topic: binary
    COPY, per page one transaction with a tracking upsert).

    Nothing is computed, no event is decoded twice (the replay decodes each invoice in both of
    its processes), and the log is shared by the stored events' size, so that each interpreter
    decodes about as much. The interpreters' start and the store's open are left out: every
    interpreter is ready before any reads (`seconds`: from the first read to the last row)."""
    import subprocess

    others = [subprocess.Popen(
        [sys.executable, "-m", "bench.baselines", "replay-floor-share", "--db", url,
         "--topics", ",".join(topics), "--after", str(bounds[k]), "--through",
         str(bounds[k + 1]), "--share", str(k)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for k in range(1, len(bounds) - 1)]
    ready = _FloorShare(url, topics, bounds[0], bounds[1], 0)
    for process in others:  # each says it is ready, then waits for the word to go
        assert process.stdout is not None
        if process.stdout.readline() != b"ready\n":
            raise RuntimeError("a replay floor share failed before it was ready")
    started = time.perf_counter()
    for process in others:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.close()
    shares = [ready.run()]
    for process in others:
        assert process.stdout is not None
        out = process.stdout.read()
        if process.wait():
            raise RuntimeError(f"a replay floor share failed (exit code {process.returncode})")
        shares.append(json.loads(out))
    return {"records": sum(s["records"] for s in shares),
            "seconds": time.perf_counter() - started, "processes": len(shares),
            "cpu": sum(s["cpu"] for s in shares), "bounds": list(bounds), "shares": shares}


class _FloorShare:
    """One interpreter's part of replay_floor(): made ready (the store opened for its
    transcoder, a connection made), then run()."""

    def __init__(self, url: str, topics: Sequence[str], after: int, through: int,
                 share: int) -> None:
        import psycopg

        from domain.application import BillingApplication

        app = BillingApplication(env=store_env(url))
        self.transcoder = app.mapper.transcoder  # billcycle's, with its typed values
        app.close()
        self.conn = psycopg.connect(url, autocommit=True)
        self.topics, self.after, self.through, self.share = list(topics), after, through, share

    def run(self) -> dict[str, Any]:
        import gc

        started, cpu = time.perf_counter(), time.process_time()
        decode, conn, after, records = self.transcoder.decode, self.conn, self.after, 0
        # As the replay does (projections/runner.py): a page's objects go by reference counting,
        # the young ones collected after each page, no full collection walking a page.
        gc.disable()
        try:
            while after < self.through:
                page = conn.cursor(binary=True).execute(
                    "SELECT notification_id, topic, state FROM billcycle_events"
                    " WHERE notification_id > %s AND notification_id <= %s"
                    " AND topic = ANY(%s) ORDER BY notification_id LIMIT %s",
                    (after, self.through, self.topics, PAGE_SIZE)).fetchall()
                if not page:
                    break
                states = [decode(state) for _, _, state in page]
                with conn.transaction(), conn.cursor() as curs:
                    with curs.copy(f"COPY {FLOOR_SCHEMA}.rows FROM STDIN (FORMAT BINARY)"
                                   ) as copy:
                        copy.set_types(["int8", "text"])
                        for position, topic, _ in page:
                            copy.write_row((position, topic))
                    curs.execute(
                        f"INSERT INTO {FLOOR_SCHEMA}.tracking VALUES (%s, %s) ON CONFLICT"
                        " (share) DO UPDATE SET notification_id = excluded.notification_id",
                        (self.share, page[-1][0]))
                records += len(states)
                after = page[-1][0]
                del states
                gc.collect(1)
        finally:
            gc.enable()
            conn.close()
        return {"share": self.share, "records": records,
                "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


def floor_share(url: str, topics: Sequence[str], after: int, through: int,
                share: int) -> dict[str, Any]:
    """`replay-floor-share`: made ready, says so on stdout, and runs when stdin says go."""
    ready = _FloorShare(url, topics, after, through, share)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    return ready.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = parser.add_subparsers(dest="which", required=True)
    kafka = sub.add_parser("kafka", help="bare kafka-python consumer decoding JSON")
    kafka.add_argument("--bootstrap", required=True)
    kafka.add_argument("--topic", required=True)
    kafka.add_argument("--no-check-crcs", action="store_true",
                       help="skip the CRC-32C check of record batches (kafka-python computes "
                       "it in pure Python unless the crc32c package is installed)")
    once = sub.add_parser("exactly-once", help="bare exactly-once consumer into PostgreSQL")
    once.add_argument("--bootstrap", required=True)
    once.add_argument("--topic", required=True)
    once.add_argument("--db", required=True)
    once.add_argument("--batch-size", type=int, default=INGEST_BATCH)
    once.add_argument("--writer-thread", action="store_true",
                      help="commit each batch in a thread while the next one is polled")
    select = sub.add_parser("select", help="bare SELECT of stored events through psycopg")
    select.add_argument("--db", required=True)
    select.add_argument("--topics", action="append", required=True,
                        help="comma-separated topics read together (repeatable)")
    rows = sub.add_parser("view-rows", help="prepared view rows written back by binary COPY")
    rows.add_argument("--db", required=True)
    rows.add_argument("--manifest", type=Path, required=True,
                      help="the manifest.json written by prepare_view_rows()")
    rows.add_argument("--connections", type=int, default=1,
                      help="connections writing at once, the views shared among them")
    floor = sub.add_parser("replay-floor", help="the replay's events read, decoded and one row "
                           "each written, nothing computed, on several interpreters")
    floor.add_argument("--db", required=True)
    floor.add_argument("--topics", required=True, help="comma-separated topics")
    floor.add_argument("--processes", type=int, default=2,
                       help="interpreters sharing the log (when no --bounds)")
    floor.add_argument("--bounds", help="comma-separated log positions from "
                       "prepare_replay_floor() (made here when not given)")
    share = sub.add_parser("replay-floor-share", help="one interpreter's part of replay-floor")
    share.add_argument("--db", required=True)
    share.add_argument("--topics", required=True)
    share.add_argument("--after", type=int, required=True)
    share.add_argument("--through", type=int, required=True)
    share.add_argument("--share", type=int, required=True)
    args = parser.parse_args(argv)
    result: dict[str, Any]
    if args.which == "kafka":
        result = bare_consumer(args.bootstrap, args.topic, not args.no_check_crcs)
    elif args.which == "exactly-once":
        result = exactly_once(args.db, args.bootstrap, args.topic, args.batch_size,
                              args.writer_thread)
    elif args.which == "select":
        result = bare_select(args.db, [t.split(",") for t in args.topics])
    elif args.which == "replay-floor":
        topics = args.topics.split(",")
        bounds = ([int(b) for b in args.bounds.split(",")] if args.bounds else
                  prepare_replay_floor(args.db, topics, args.processes))
        result = replay_floor(args.db, topics, bounds)
    elif args.which == "replay-floor-share":
        result = floor_share(args.db, args.topics.split(","), args.after, args.through,
                             args.share)
    else:
        result = view_rows(args.db, json.loads(args.manifest.read_text()), args.connections)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
