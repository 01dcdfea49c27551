"""billcycle's figures in one command: Kafka ingest, batch runs, replay, and the embedded store.

    ./bench/run                                   # defaults: a few minutes on two cores
    ./bench/run --contracts-small 10000 --contracts-large 100000     # the issue's sizes
    ./bench/run --skip ingest,sqlite --profile    # some steps only; under py-spy

It starts a throwaway PostgreSQL (LocalPostgres, fast=True: fsync off) and a Kafka broker
(LocalKafka), as the tests do, unless --postgres-url / --kafka-bootstrap name running ones.
Books are generated seeded and streamed (bench/book.py: 3 to 10 lines per invoice). Every
billcycle step runs as its own child process (`.venv/bin/billcycle --db URL ...`), measured for
wall time, CPU time and peak RSS (os.wait4), with the CPU the PostgreSQL server and the Kafka
broker spent meanwhile; what a step did is counted in the database afterwards. After a step's
bulk writes the database is settled (VACUUM ANALYZE, not measured), so that no step is
measured beside the autovacuum the one before it set off. The bare
baselines (bench/baselines.py) run the same way, in the same run, on the same data.

  1. ingest  usage events from Kafka into PostgreSQL: `billcycle consume --until-caught-up`
             (each batch and its offsets in one transaction), beside a bare kafka-python
             consumer decoding the JSON of the same records (with and without its CRC check)
             and, each on a fresh database of its own, a bare exactly-once consumer into
             PostgreSQL: the same reads and json.loads, then per batch of a partition (consume's
             2,000) one transaction that COPYs (binary) one row per record (message id,
             customer, metric, quantity as numeric, occurred_at, the raw bytes) into a table
             keyed by message id and upserts the partition's offset; no validation, dedupe
             policy or aggregation. Once committing in the polling thread, once in a writer
             thread overlapping the polling as billcycle's does. Its rows are the least a Python
             consumer storing each record in PostgreSQL costs: a bound, not a target (a check
             note gives billcycle's share of it)
  2. batch   `billcycle run --cycle-date 2026-12-01` over --contracts-small and
             --contracts-large contracts on PostgreSQL (each loaded first with `billcycle
             ingest FILE`, measured apart), and the time ratio of the two
  3. replay  first `billcycle project` on the large batch's database: its invoices into
             collections and every view caught up, as after any billing run (a figure, not a
             target); then `billcycle replay` (every projection rebuilt from the log),
             beside a bare psycopg SELECT of the same stored events; both count each stored
             event once, however many views read it; and the replay floor: the same
             events read by a binary cursor in the same pages, each decoded by billcycle's
             transcoder (its parser and typed values, no domain objects) and one row each
             written by binary COPY, nothing computed, on two interpreters that share the log
             by the events' stored size (computed beforehand, not measured), each event
             decoded once, timed from the first read once both are ready: the least a replay
             of these events does in Python, a bound, not a target. Then the bare view rows:
             every view table's rows, as the replay left them, copied out (binary COPY to
             files, not measured) and written back into empty copies of the tables (`LIKE ...
             INCLUDING ALL` in a scratch schema, dropped afterwards) by one process sending the
             bytes by binary COPY, grouped as the replay writes (per page of 5,000 events one
             transaction per view, with a tracking upsert), the reports' indexes made after
             the load. Its row gives rows written and the server's CPU; its note, the replay's
             events over those seconds: the ceiling the server's part alone allows, with
             nothing computed in Python (a bound, not a target). Once on one connection, as
             the replay writes, once on two sharing the views (the server on both cores)
  4. sqlite  the embedded default: the --contracts-small batch on SQLite

The table is printed, and written with every detail as bench/results/<stamp>.json; children's
stderr goes to bench/results/<stamp>.log, py-spy profiles to bench/results/<stamp>-*.pyspy.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from bench import book
from bench.baselines import INGEST_BATCH, PAGE_SIZE
from bench.measure import Child, run_child
from bench.profile import render, statements, summarize
from infra.postgres import LocalPostgres, create_database, drop_database

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BILLCYCLE = REPO / ".venv" / "bin" / "billcycle"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
CYCLE_DATE = date(2026, 12, 1)
STEPS = ("ingest", "batch", "replay", "sqlite")
ISSUE_SMALL, ISSUE_LARGE = 10_000, 100_000
# Defaults a tenth of the issue's sizes: a few minutes on two cores.
DEFAULT_SMALL, DEFAULT_LARGE, DEFAULT_USAGE_EVENTS = 1_000, 10_000, 100_000
USAGE_PARTITIONS = 3  # the broker's num.partitions, as a producer's topic would get

# The issue's targets (2 cores, broker and PostgreSQL on the same machine).
INGEST_TARGET = 15_000  # usage events/s
INGEST_RATIO_TARGET = 0.6  # of the bare consumer
BATCH_TARGET = 1_000  # invoices/s at 100,000 contracts
SCALING_TARGET = 1.1  # time ratio <= 1.1 x contracts ratio (10x contracts <= 11x time)
RSS_TARGET = 2**30  # bytes, at 100,000 contracts
REPLAY_TARGET = 50_000  # events/s
BOUND = "a bound, not a target"  # the verdict of a check that notes a measured raw limit

INVOICE_ISSUED = "domain.invoice:Invoice.InvoiceIssued"
OUTCOMES_RECORDED = "domain.billing_run:BillingRun.OutcomesRecorded"
USAGE_RECORDED = "domain.usage:UsageBatch.Recorded"


@dataclass
class Figure:
    """One row of the table: a count over a measured child's wall time."""

    step: str
    what: str
    size: str
    count: int
    unit: str
    child: Child | None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.child.wall if self.child and self.child.wall else 0.0


@dataclass
class Check:
    """A target of the issue and whether this run meets it."""

    target: str
    measured: str
    met: bool | None  # None: not measured at the issue's size, or a note
    note: str = ""  # shown instead of the verdict: a bound measured beside the targets


@dataclass
class Bench:
    """One run of the bench: its services, the figures so far, and the steps themselves."""

    args: argparse.Namespace
    stamp: str
    work: Path
    pg_admin: str | None = None
    pg_pid: int | None = None
    pg_log: Path | None = None  # the server's log, when profiling a throwaway cluster
    kafka: str | None = None
    kafka_pid: int | None = None
    figures: list[Figure] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    code: dict[str, Any] = field(default_factory=dict)  # what is measured, taken at the start
    books: dict[int, Path] = field(default_factory=dict)
    batch_dbs: dict[int, str] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return RESULTS / f"{self.stamp}.log"

    # --- children ---------------------------------------------------------------------------

    def child(self, label: str, command: list[str], env: dict[str, str] | None = None,
              profile: bool = False, db: str | None = None) -> Child:
        """Run one measured child; when profiling and `profile`, under py-spy, with the
        statements PostgreSQL runs for `db` timed in its log."""
        say(f"{label}: {' '.join(_shown(command))}")
        profile = profile and self.args.profile
        raw = RESULTS / f"{self.stamp}-{_slug(label)}.pyspy.txt"
        if profile:
            command = [str(PY_SPY), "record", "--rate", "100", "--idle", "--threads",
                       "--format", "raw", "--output", str(raw), "--", *command]
        with open(self.log, "a") as log:
            log.write(f"\n=== {datetime.now(UTC):%H:%M:%S} {label}: {' '.join(command)}\n")
        logged = self.pg_log if profile and db and db.startswith("postgres") else None
        with self.statements_logged(db if logged else None):
            start = logged.stat().st_size if logged else 0
            child = run_child(command, env=env or child_env(), cwd=REPO, log=self.log,
                              servers={"postgres": self.pg_pid, "kafka": self.kafka_pid})
        say(f"{label}: {child.wall:.1f} s, peak RSS {child.peak_rss_mib:.0f} MiB")
        if profile and raw.exists():
            self.profiles[label] = {"raw": str(raw.relative_to(REPO)), **summarize(raw, 25)}
            if logged:
                with open(logged, errors="replace") as server_log:
                    server_log.seek(start)
                    self.profiles[label]["postgres"] = statements(server_log, child.wall, 12)
        return child

    @contextlib.contextmanager
    def statements_logged(self, db: str | None) -> Iterator[None]:
        """Every statement of the sessions opened meanwhile on `db` logged with its duration
        (not its parameters: an ingest batch's are megabytes)."""
        if db is None:
            yield
            return
        assert self.pg_admin is not None
        name = sql.Identifier(urlsplit(db).path.lstrip("/"))
        settings = ("log_min_duration_statement = 0", "log_parameter_max_length = 0")
        with psycopg.connect(self.pg_admin, autocommit=True) as conn:
            for setting in settings:
                conn.execute(sql.SQL("ALTER DATABASE {} SET " + setting).format(name))
        try:
            yield
        finally:
            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                for setting in settings:
                    conn.execute(sql.SQL("ALTER DATABASE {} RESET " + setting.split()[0])
                                 .format(name))

    def billcycle(self, label: str, db: str, *args: str, env: dict[str, str] | None = None,
                  profile: bool = False) -> tuple[Child, Any]:
        child = self.child(label, [str(BILLCYCLE), "--db", db, "--json", *args], env, profile,
                           db)
        # py-spy says where it wrote its profile on the same stdout.
        document = "\n".join(line for line in child.stdout.splitlines()
                             if not line.startswith("py-spy> "))
        return child, json.loads(document)

    def database(self, name: str) -> str:
        assert self.pg_admin is not None
        name = f"bench_{self.stamp.lower()}_{name}"
        self.databases.append(name)
        return create_database(self.pg_admin, name)

    # --- books ------------------------------------------------------------------------------

    def book(self, contracts: int) -> Path:
        """The bench book of this many contracts, written once per run."""
        if contracts not in self.books:
            path = self.work / f"book-{contracts}.jsonl"
            started = time.perf_counter()
            with open(path, "wb") as out:
                lines = 0
                for line in book.generate(contracts, self.args.seed, CYCLE_DATE,
                                          self.args.batch_events):
                    out.write(line)
                    lines += 1
            say(f"book of {contracts:,} contracts: {lines:,} messages in "
                f"{time.perf_counter() - started:.0f} s")
            self.books[contracts] = path
        return self.books[contracts]

    # --- 1. ingest --------------------------------------------------------------------------

    def ingest(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic

        from consumers.kafka_source import Topics

        assert self.kafka is not None
        topics = Topics(**{name: f"bench-{self.stamp}.billing.{name}" for name in
                           ("contracts", "usage", "payments", "invoices", "deadletter")})
        admin = KafkaAdminClient(bootstrap_servers=self.kafka)
        try:
            admin.create_topics([NewTopic(getattr(topics, name), USAGE_PARTITIONS
                                          if name == "usage" else 1, 1)
                                 for name in ("contracts", "usage", "payments", "deadletter")])
        finally:
            admin.close()
        produced, produce_seconds = self.produce_usage(lambda n: (topics.usage,))
        say(f"ingest: {produced:,} usage records on {topics.usage} "
            f"({produced / produce_seconds:,.0f}/s to produce)")

        size = f"{produced:,} records"
        bare_command = [sys.executable, "-m", "bench.baselines", "kafka", "--bootstrap",
                        self.kafka, "--topic", topics.usage]
        # kafka-python checks each batch's CRC-32C in pure Python unless the crc32c package is
        # installed: this row shows what that check costs a consumer.
        unchecked = self.child("ingest bare consumer, no CRC check",
                               [*bare_command, "--no-check-crcs"])
        stored = [self.bare_exactly_once(topics.usage, threaded, size)
                  for threaded in (False, True)]
        # The same records consumed several times, the bare consumer just before billcycle
        # each time: billcycle's wall time moves by a sixth from run to run at the same CPU,
        # so the table shows the run of the median ratio and the JSON every run.
        runs = [self.ingest_run(topics, bare_command, size, n)
                for n in range(self.args.ingest_runs)]
        runs.sort(key=lambda run: run[0].rate / run[1].rate)
        billcycle, baseline = runs[(len(runs) - 1) // 2]
        ratios = [f"{b.rate / base.rate:.2f}" for b, base in runs]
        ratio = billcycle.rate / baseline.rate
        billcycle.note = f"{ratio:.2f} of bare" + (
            f" (the median of {len(runs)} runs: {', '.join(ratios)})" if len(runs) > 1 else "")
        billcycle.details["runs"] = [
            {"rate": round(b.rate), "bare_rate": round(base.rate),
             "ratio": round(b.rate / base.rate, 3), "wall": round(b.child.wall, 2)
             if b.child else None} for b, base in runs]
        no_crc = Figure(
            "ingest", "bare kafka-python consumer, json.loads, check_crcs=False", size,
            json.loads(unchecked.stdout)["records"], "events", unchecked,
            note="not the ratio's base")
        for figure in stored:
            figure.note = f"{figure.rate / baseline.rate:.2f} of bare; {figure.note}"
        self.figures += [billcycle, baseline, no_crc, *stored]
        self.checks += [
            Check(f"ingest >= {INGEST_TARGET:,} events/s", f"{billcycle.rate:,.0f}/s",
                  billcycle.rate >= INGEST_TARGET),
            Check(f"ingest >= {INGEST_RATIO_TARGET} of the bare consumer", f"{ratio:.2f}",
                  ratio >= INGEST_RATIO_TARGET),
        ]
        self.checks.append(cpu_bound("ingest", billcycle, baseline.rate))
        best = max(stored, key=lambda f: f.rate)
        self.checks.append(Check(
            "ingest bound: bare exactly-once consumer into PostgreSQL",
            f"{best.rate:,.0f}/s ({best.rate / baseline.rate:.2f} of bare; billcycle "
            f"{billcycle.rate / best.rate:.2f} of it)", None, note=BOUND))

    def ingest_run(self, topics: Any, bare_command: list[str], size: str,
                   n: int) -> tuple[Figure, Figure]:
        """The bare consumer, then `billcycle consume` into a database of its own, over the
        same records: (billcycle, bare). Profiled (with --profile) in the first run only."""
        label = f" (run {n + 1})" if self.args.ingest_runs > 1 else ""
        bare = self.child(f"ingest bare consumer{label}", bare_command)
        bare_result = json.loads(bare.stdout)
        db = self.database(f"ingest_{n}" if n else "ingest")
        env = child_env({f"BILLCYCLE_TOPIC_{name.upper()}": getattr(topics, name)
                         for name in ("contracts", "usage", "payments", "deadletter")})
        consume, stats = self.billcycle(
            f"ingest consume{label}", db, "consume", "--bootstrap", self.kafka or "",
            "--group", f"bench-{self.stamp}-{n}", "--until-caught-up",
            *(("--batch-size", str(self.args.ingest_batch_size))
              if self.args.ingest_batch_size else ()),
            env=env, profile=n == 0)
        billcycle = Figure(
            "ingest", "Kafka -> PostgreSQL, exactly once (billcycle consume)", size,
            stats["records"], "events", consume,
            details={"stored_usage_records": count_usage_records(db),
                     "metered_usage_records_and_backlog": metered_usage(db), "consume": stats,
                     "in_process_rate": stats.get("records_per_second")})
        baseline = Figure(
            "ingest", "bare kafka-python consumer, json.loads", size, bare_result["records"],
            "events", bare, details={"in_process_rate": round(
                bare_result["records"] / bare_result["seconds"])})
        return billcycle, baseline

    def bare_exactly_once(self, topic: str, threaded: bool, size: str) -> Figure:
        """The bare exactly-once consumer into PostgreSQL, on a fresh database of its own."""
        assert self.kafka is not None
        batch = self.args.ingest_batch_size or INGEST_BATCH
        db = self.database("ingest_bare_threaded" if threaded else "ingest_bare")
        child = self.child(
            "ingest bare exactly-once" + (", writer thread" if threaded else ""),
            [sys.executable, "-m", "bench.baselines", "exactly-once", "--bootstrap", self.kafka,
             "--topic", topic, "--db", db, "--batch-size", str(batch),
             *(("--writer-thread",) if threaded else ())])
        result = json.loads(child.stdout)
        what = ("the same, a writer thread overlapping the polling" if threaded else
                f"bare exactly-once consumer -> PostgreSQL (json.loads; per {batch:,}: binary "
                "COPY of a row each + offset)")
        return Figure(
            "ingest", what, size, result["records"], "events", child,
            note=f"{result['stored']:,} rows in {result['batches']:,} transactions",
            details={**result, "in_process_rate": round(result["records"] / result["seconds"])})

    def produce_usage(self, route: Callable[[int], Sequence[str]]) -> tuple[int, float]:
        """The first --usage-events usage messages of a book of --contracts-small contracts,
        with events a month enough to reach that many; keyed by customer as contract.md says;
        the n-th (from 0) onto each of the topics `route(n)` names."""
        from kafka import KafkaProducer

        wanted = self.args.usage_events
        contracts = self.args.contracts_small
        events = max(1, math.ceil(wanted / contracts))
        producer = KafkaProducer(bootstrap_servers=self.kafka, linger_ms=20,
                                 batch_size=512 * 1024, delivery_timeout_ms=180_000)
        started = time.perf_counter()
        sent = 0
        try:
            for line in book.generate(contracts, self.args.seed, CYCLE_DATE, events):
                if not line.startswith(b'{"type":"usage"'):
                    continue
                key, value = json.loads(line)["customer_id"].encode(), line.rstrip()
                for topic in route(sent):
                    producer.send(topic, key=key, value=value)
                sent += 1
                if sent >= wanted:
                    break
            producer.flush()
        finally:
            producer.close()
        return sent, time.perf_counter() - started

    # --- 2. batch ---------------------------------------------------------------------------

    def batch(self) -> None:
        small, large = self.args.contracts_small, self.args.contracts_large
        runs = {size: self.batch_run(size) for size in sorted({small, large})}
        if small == large:
            return
        small_child, large_child = runs[small].child, runs[large].child
        assert small_child is not None and large_child is not None  # batch figures have one
        times = large_child.wall / small_child.wall
        scale = large / small
        self.checks += [
            Check(f"batch >= {BATCH_TARGET:,} invoices/s at {ISSUE_LARGE:,} contracts",
                  f"{runs[large].rate:,.0f}/s at {large:,}",
                  runs[large].rate >= BATCH_TARGET if large == ISSUE_LARGE else None),
            Check(f"{scale:g}x contracts <= {SCALING_TARGET * scale:g}x time",
                  f"{times:.2f}x time", times <= SCALING_TARGET * scale),
            Check(f"batch peak RSS < 1 GiB at {ISSUE_LARGE:,} contracts",
                  f"{large_child.peak_rss_mib:,.0f} MiB at {large:,}",
                  large_child.peak_rss < RSS_TARGET if large == ISSUE_LARGE else None),
        ]
        self.figures.append(Figure(
            "batch", f"time ratio {large:,} / {small:,} contracts", f"{scale:g}x contracts",
            0, "", None, note=f"{times:.2f}x time", details={"time_ratio": times}))

    def batch_run(self, contracts: int) -> Figure:
        path = self.book(contracts)
        db = self.database(f"batch_{contracts}")
        self.load(db, path, contracts, "PostgreSQL")
        if not self.batch_dbs:
            self.startup(db)
        figure = self.bill(db, contracts, "PostgreSQL", profile=True)
        self.batch_dbs[contracts] = db
        return figure

    def startup(self, db: str) -> None:
        """What every child pays before its work: the interpreter, imports, the store opened."""
        child, _ = self.billcycle("startup", db, "deadletters")
        self.figures.append(Figure(
            "batch", "billcycle start: imports, store opened (billcycle deadletters)", "",
            0, "", child, note="included in every wall time"))

    def load(self, db: str, path: Path, contracts: int, store: str) -> None:
        child, report = self.billcycle(f"load {contracts} {store}", db, "ingest", str(path))
        self.figures.append(Figure(
            "load", f"file -> {store} (billcycle ingest FILE)", f"{contracts:,} contracts",
            report["accepted"] + report["duplicates"] + len(report["rejected"]), "messages",
            child, details={"accepted": report["accepted"], "duplicates": report["duplicates"],
                            "rejected": len(report["rejected"])}))
        self.settle(db)

    def settle(self, db: str) -> None:
        """VACUUM (ANALYZE) after a step's bulk writes, not measured: the next step is then
        measured on a settled database, not beside the autovacuum the last one set off (in
        20261128T020451Z it doubled the server's CPU in the project and replay steps)."""
        if not db.startswith("postgres"):
            return
        started = time.perf_counter()
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        say(f"settled: VACUUM (ANALYZE) in {time.perf_counter() - started:.0f} s, not measured")

    def bill(self, db: str, contracts: int, store: str, profile: bool) -> Figure:
        child, report = self.billcycle(f"batch {contracts} {store}", db, "run",
                                       "--cycle-date", CYCLE_DATE.isoformat(), profile=profile)
        invoices, lines, fewest, most = invoice_counts(db)
        figure = Figure(
            "batch", f"billing run on {store} (billcycle run)", f"{contracts:,} contracts",
            invoices, "invoices", child,
            note=f"{lines / max(invoices, 1):.1f} lines/invoice ({fewest} to {most})",
            details={"counts": report["counts"], "lines": lines, "lines_min": fewest,
                     "lines_max": most, "outcome_records": count_events(db, OUTCOMES_RECORDED)})
        self.figures.append(figure)
        self.settle(db)
        return figure

    # --- 3. replay --------------------------------------------------------------------------

    def replay(self) -> None:
        from projections.runner import PROJECTIONS

        contracts = max(self.batch_dbs, default=self.args.contracts_small)
        db = self.batch_dbs.get(contracts)
        if db is None:  # the batch step was skipped: a book of its own, loaded and billed
            db = self.database(f"replay_{contracts}")
            self.load(db, self.book(contracts), contracts, "PostgreSQL")
            self.bill(db, contracts, "PostgreSQL", profile=False)
        size = f"{contracts:,} contracts billed"
        # What follows a billing run: collections started for its invoices, every view caught
        # up (as far behind as a replay, so built in two processes too).
        child, report = self.billcycle("project", db, "project")
        collections = report["collections_process"]["events"]
        self.figures.append(Figure(
            "project", "the run's invoices into collections and every view (billcycle project)",
            size, report["events_read"], "events", child,
            note=f"{collections:,} invoices into collections; not a target",
            details={"project": report}))
        self.settle(db)
        child, report = self.billcycle("replay", db, "replay", profile=True)
        # Each stored event read from the log counts once, however many views use it (an
        # invoice feeds three); the bare SELECT reads the same events once, in the same pages.
        events = report["events_read"]
        topics = sorted({t for cls in PROJECTIONS.values() for t in cls.topics})
        bare = self.child("replay bare select", [
            sys.executable, "-m", "bench.baselines", "select", "--db", db,
            "--topics", ",".join(topics)])
        bare_result = json.loads(bare.stdout)
        rebuilt = Figure("replay", "every projection rebuilt (billcycle replay), events read "
                         "once", size, events, "events", child, details={
                             "replay": report, "in_process_rate": round(events / report["seconds"]),
                             "events_per_view_summed": sum(
                                 v["events"] for v in report["projections"].values())})
        baseline = Figure("replay", "bare SELECT of the same events (psycopg, binary)", size,
                          bare_result["records"], "events", bare, details={
                              "in_process_rate": round(bare_result["records"]
                                                       / bare_result["seconds"])})
        ratio = rebuilt.rate / baseline.rate
        rebuilt.note = f"{ratio:.2f} of bare"
        floor = self.replay_floor(db, topics, size)
        # The views' own read of the log went in pages of this many events (the collections
        # process reads first, in pages of its own).
        pages = max(1, math.ceil(bare_result["records"] / PAGE_SIZE))
        rows, both = self.bare_view_rows(db, events, pages, size)
        self.figures += [rebuilt, baseline, floor, rows, both]
        measured = (f"{rows.details['ceiling_events_per_second']:,} events/s, "
                    f"{both.details['ceiling_events_per_second']:,} on two connections")
        server = rows.child.servers_cpu.get("postgres") if rows.child else None
        if server and events and rows.count:
            # What the server's CPU alone allows on this machine's cores, were nothing else
            # running: the rows' cost per stored event, however the writes are spread.
            per_event, cores = server / events, os.cpu_count() or 1
            measured += (f"; the server's CPU {per_event * 1e6:,.0f} µs an event "
                         f"({rows.count / events:.1f} rows at {server / rows.count * 1e6:.1f} µs):"
                         f" {cores / per_event:,.0f}/s on {cores} cores")
        self.checks += [
            Check(f"replay >= {REPLAY_TARGET:,} events/s", f"{rebuilt.rate:,.0f}/s",
                  rebuilt.rate >= REPLAY_TARGET),
            floor_check(floor),
            views_bound(floor, both, events),
            Check("replay bound: the views' rows written back, nothing computed in Python",
                  measured, None, note=BOUND),
            cpu_bound("replay", rebuilt),
        ]

    def replay_floor(self, db: str, topics: list[str], size: str) -> Figure:
        """The least a replay does, measured on the same events: read, decoded by billcycle's
        transcoder, one row each written, nothing computed, on two interpreters sharing the
        log by size (bench/baselines.py replay_floor)."""
        from bench.baselines import FLOOR_SCHEMA, prepare_replay_floor

        processes = min(2, os.cpu_count() or 1)
        try:
            bounds = prepare_replay_floor(db, topics, processes)  # not measured
            child = self.child("replay floor", [
                sys.executable, "-m", "bench.baselines", "replay-floor", "--db", db,
                "--topics", ",".join(topics), "--bounds", ",".join(map(str, bounds))])
        finally:
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(
                    sql.Identifier(FLOOR_SCHEMA)))
        result = json.loads(child.stdout)
        return Figure(
            "replay", "floor: the same events read and decoded by billcycle's transcoder, one "
            f"row each written, nothing computed ({result['processes']} processes)", size,
            result["records"], "events", child, note=f"{result['records'] / result['seconds']:,.0f}"
            "/s from the first read to the last row; not a target", details=result)

    def bare_view_rows(self, db: str, events: int, pages: int,
                       size: str) -> tuple[Figure, Figure]:
        """The rows the replay wrote, written again by binary COPY from bytes prepared
        beforehand: what the server's part of a replay costs alone, on one connection as the
        replay writes, and on two (both cores)."""
        from bench.baselines import VIEW_ROWS_SCHEMA, empty_copies, prepare_view_rows

        started = time.perf_counter()
        out = self.work / "view-rows"
        figures = []
        try:
            manifest = prepare_view_rows(db, out, pages)
            say(f"replay bare view rows: {manifest['rows']:,} rows of "
                f"{len(manifest['tables'])} tables copied out in {pages} parts "
                f"({time.perf_counter() - started:.0f} s, not measured)")
            for connections in (1, 2):
                if connections > 1:
                    empty_copies(db)  # the copies made empty again
                child = self.child(f"replay bare view rows, {connections} connection"
                                   + ("s" if connections > 1 else ""), [
                    sys.executable, "-m", "bench.baselines", "view-rows", "--db", db,
                    "--manifest", str(out / "manifest.json"),
                    "--connections", str(connections)])
                figures.append(self.view_rows_figure(child, events, pages, size, manifest))
        finally:
            shutil.rmtree(out, ignore_errors=True)
            with psycopg.connect(db, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {0} CASCADE").format(
                    sql.Identifier(VIEW_ROWS_SCHEMA)))
        return figures[0], figures[1]

    @staticmethod
    def view_rows_figure(child: Child, events: int, pages: int, size: str,
                         manifest: dict[str, Any]) -> Figure:
        result = json.loads(child.stdout)
        ceiling = round(events / result["seconds"]) if result["seconds"] else 0
        server = child.servers_cpu.get("postgres")
        what = ("bare view rows: the replay's rows written back (binary COPY of prepared "
                "bytes, one connection)" if result["connections"] == 1 else
                f"the same, {result['connections']} connections sharing the views")
        return Figure(
            "replay", what, size, result["records"], "rows", child,
            note=f"ceiling {ceiling:,} events/s ({events:,} events / "
            f"{result['seconds']:.1f} s)",
            details={**result, "events": events, "pages": pages,
                     "tables": manifest["tables"], "ceiling_events_per_second": ceiling,
                     "server_us_per_row": None if server is None or not result["records"]
                     else round(server / result["records"] * 1e6, 1)})

    # --- 4. the embedded default ------------------------------------------------------------

    def sqlite(self) -> None:
        contracts = self.args.contracts_small
        db = f"sqlite:///{self.work / 'bench.db'}"
        self.load(db, self.book(contracts), contracts, "SQLite")
        self.bill(db, contracts, "SQLite", profile=True)


# --- counting in the database ----------------------------------------------------------------


def floor_check(floor: Figure) -> Check:
    """The replay floor beside the target: what is left, per event, for everything a replay
    does beyond reading and decoding its events and writing one row each."""
    processes = floor.details.get("processes", 1)
    rate = floor.count / floor.details["seconds"] if floor.details.get("seconds") else 0.0
    measured = f"{rate:,.0f}/s: {rate / REPLAY_TARGET:.2f} of the target"
    if rate <= REPLAY_TARGET:
        measured += ", which the floor alone misses"
    else:
        left = (1 / REPLAY_TARGET - 1 / rate) * 1e6
        measured += (f"; it leaves {left:.1f} µs of wall time an event ({left * processes:.1f} "
                     f"µs of CPU on {processes} cores) for every view's rules and rows")
    return Check(f"replay floor: the events read and decoded, one row each, on {processes} "
                 "processes", measured, None, note=BOUND)


def views_bound(floor: Figure, rows: Figure, events: int) -> Check:
    """The most a replay of the views as they are could reach on this machine's cores: the
    floor's CPU (reading and decoding the events) and the CPU of writing the views' rows (the
    server's and the sender's, on two connections), nothing computed, as if every core were
    busy with them and nothing else."""
    cores = os.cpu_count() or 1
    target = f"replay bound: the floor and the views' rows, nothing computed, on {cores} cores"
    if floor.child is None or rows.child is None or not events:
        return Check(target, "n/a", None, note=BOUND)
    reading = floor.details["cpu"] + sum(floor.child.servers_cpu.values())
    writing = rows.child.cpu + sum(rows.child.servers_cpu.values())
    best = events * cores / (reading + writing)
    return Check(target, f"{reading + writing:.1f} CPU-s (reading and decoding {reading:.1f}, "
                 f"the rows {writing:.1f}) for {events:,} events: at most {best:,.0f}/s",
                 None, note=BOUND)


def cpu_bound(step: str, figure: Figure, bare_rate: float | None = None) -> Check:
    """The most a step could reach on this machine at the CPU it spent: its process's and the
    servers' CPU over all cores, as if every core were busy with it and nothing else. A rate
    above this needs less work, not better overlap (threads, processes)."""
    child, cores = figure.child, os.cpu_count() or 1
    if child is None or not figure.count:
        return Check(f"{step} bound: its CPU on {cores} cores", "n/a", None, note=BOUND)
    servers = sum(child.servers_cpu.values())
    total = child.cpu + servers
    best = figure.count * cores / total if total else 0.0
    parts = ", ".join([f"process {child.cpu:.1f}",
                       *(f"{name} {cpu:.1f}" for name, cpu in child.servers_cpu.items())])
    measured = (f"{total:.1f} CPU-s ({parts}) for {figure.count:,} {figure.unit}: at most "
                f"{best:,.0f}/s with {cores} cores busy")
    if bare_rate:
        measured += f" ({best / bare_rate:.2f} of bare)"
    return Check(f"{step} bound: its CPU on {cores} cores", measured, None, note=BOUND)


def count_events(db: str, topic: str) -> int:
    row = _query(db, "SELECT count(*) FROM {events} WHERE topic = ?", topic)
    return int(row[0])


def count_usage_records(db: str) -> int:
    """Usage messages stored: the records of every UsageBatch.Recorded event."""
    records = ("json_array_length(convert_from(state, 'UTF8')::json -> 'records')"
               if db.startswith("postgres")
               else "json_array_length(CAST(state AS TEXT), '$.records')")
    row = _query(db, f"SELECT coalesce(sum({records}), 0) FROM {{events}} WHERE topic = ?",
                 USAGE_RECORDED)
    return int(row[0])


def metered_usage(db: str) -> tuple[int, int]:
    """Usage events counted in the meters, and usage batches still in the meter backlog
    (PostgreSQL): consume returns once the last fold is done, so (stored records, 0)."""
    return (int(_query(db, "SELECT coalesce(sum(event_count), 0) FROM usage_buckets")[0]),
            int(_query(db, "SELECT count(*) FROM meter_backlog")[0]))


def invoice_counts(db: str) -> tuple[int, int, int, int]:
    """Invoices issued, their lines in all, the fewest and the most lines on one."""
    lines = ("json_array_length(convert_from(state, 'UTF8')::json -> 'lines')"
             if db.startswith("postgres") else "json_array_length(CAST(state AS TEXT), '$.lines')")
    row = _query(db, f"SELECT count(*), coalesce(sum(n), 0), coalesce(min(n), 0),"
                     f" coalesce(max(n), 0) FROM (SELECT {lines} AS n FROM {{events}}"
                     f" WHERE topic = ?) AS issued", INVOICE_ISSUED)
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _query(db: str, statement: str, *params: Any) -> tuple[Any, ...]:
    if db.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
            return tuple(conn.execute(statement.format(events="stored_events"),
                                      params).fetchone())
    with psycopg.connect(db) as conn:
        row = conn.execute(statement.format(events="billcycle_events").replace("?", "%s"),
                           params).fetchone()
        assert row is not None
        return tuple(row)


# --- services ----------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(bench: Bench) -> Iterator[None]:
    if bench.args.postgres_url:
        bench.pg_admin = bench.args.postgres_url
        yield
        return
    with LocalPostgres(tempfile.mkdtemp(prefix="billcycle-bench-pg-"), fast=True) as pg:
        bench.pg_admin = pg.admin_url
        bench.pg_pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        bench.pg_log = pg.log_file if bench.args.profile else None
        say(f"PostgreSQL on {pg.admin_url} (fast: fsync off)")
        yield


@contextlib.contextmanager
def kafka(bench: Bench) -> Iterator[None]:
    if bench.args.kafka_bootstrap:
        bench.kafka = bench.args.kafka_bootstrap
        yield
        return
    from infra.kafka_broker import LocalKafka

    with LocalKafka(tempfile.mkdtemp(prefix="billcycle-bench-kafka-")) as broker:
        bench.kafka = broker.bootstrap
        bench.kafka_pid = broker.pid()
        say(f"Kafka on {broker.bootstrap}")
        yield


# --- output ------------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} bench: {text}", file=sys.stderr, flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BILLCYCLE_KAFKA", "BILLCYCLE_TOPIC_", "BILLCYCLE_DB"))}
    # kafka-python's importlib.resources calls warn on every import under Python 3.11.
    env["PYTHONWARNINGS"] = "ignore::DeprecationWarning"
    env["PYTHONPATH"] = str(REPO)
    return {**env, **(extra or {})}


def _shown(command: list[str]) -> list[str]:
    return [part.removeprefix(str(REPO) + "/") for part in command]


def _slug(label: str) -> str:
    return "-".join(label.lower().split())


def table(figures: list[Figure]) -> str:
    head = ["step", "figure", "size", "count", "wall s", "cpu s", "pg cpu s", "kafka cpu s",
            "peak RSS MiB", "load", "rate /s", "note"]
    rows = []
    for f in figures:
        c = f.child
        rows.append([
            f.step, f.what, f.size, f"{f.count:,} {f.unit}" if f.unit else "",
            f"{c.wall:.1f}" if c else "", f"{c.cpu:.1f}" if c else "",
            _server(c, "postgres"), _server(c, "kafka"),
            f"{c.peak_rss_mib:,.0f}" if c else "", f"{c.load:.1f}" if c else "",
            f"{f.rate:,.0f}" if c and f.count else "", f.note,
        ])
    return _grid(head, rows)


def _server(child: Child | None, name: str) -> str:
    if child is None or name not in child.servers_cpu:
        return ""
    return f"{child.servers_cpu[name]:.1f}"


def checks_table(checks: list[Check]) -> str:
    verdict = {True: "meets", False: "MISSES", None: "n/a (not at the issue's size)"}
    return _grid(["target", "measured", ""], [[c.target, c.measured, c.note or verdict[c.met]]
                                              for c in checks])


def _grid(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    numeric = {i for i, h in enumerate(head) if h.endswith((" s", "MiB", "/s", "count", "load"))}

    def line(row: list[str]) -> str:
        return "  ".join(str(v).rjust(w) if i in numeric else str(v).ljust(w)
                         for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def document(bench: Bench, started: float) -> dict[str, Any]:
    args = bench.args
    return {
        "stamp": bench.stamp,
        "command": " ".join(["./bench/run", *sys.argv[1:]]),
        "code": bench.code,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    # Without it kafka-python checks CRCs in pure Python (the ingest's rows).
                    "crc32c_installed": importlib.util.find_spec("crc32c") is not None,
                    "load_average_at_end": os.getloadavg()},
        "parameters": {"contracts_small": args.contracts_small,
                       "contracts_large": args.contracts_large,
                       "usage_events": args.usage_events, "batch_events": args.batch_events,
                       "seed": args.seed, "skip": sorted(args.skip), "profile": args.profile,
                       "issue_sizes": (args.contracts_small, args.contracts_large)
                       == (ISSUE_SMALL, ISSUE_LARGE),
                       "postgres": args.postgres_url or "LocalPostgres(fast=True)",
                       "kafka": args.kafka_bootstrap or "LocalKafka"},
        "figures": [{**{k: v for k, v in asdict(f).items() if k != "child"},
                     "rate": round(f.rate, 1),
                     "child": None if f.child is None else {
                         **{k: v for k, v in asdict(f.child).items() if k != "stdout"},
                         "peak_rss_mib": round(f.child.peak_rss_mib, 1)}}
                    for f in bench.figures],
        "checks": [asdict(c) for c in bench.checks],
        "profiles": bench.profiles,
    }


# --- the command ---------------------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """The commit measured, and the files changed in the working tree (others' work too)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=False)
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "changed": changed}


def _skip(text: str) -> set[str]:
    steps = {s.strip() for s in text.split(",") if s.strip()}
    unknown = steps - set(STEPS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown step {', '.join(sorted(unknown))}; the steps are {', '.join(STEPS)}")
    return steps


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./bench/run", description=__doc__.splitlines()[0] if __doc__ else "",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The issue's sizes: --contracts-small 10000 --contracts-large 100000 "
        "(about half an hour on two cores, most of it loading the books).")
    parser.add_argument("--contracts-small", type=_positive, default=DEFAULT_SMALL,
                        help=f"contracts of the small batch and the SQLite batch (default "
                        f"{DEFAULT_SMALL}; the issue's: {ISSUE_SMALL})")
    parser.add_argument("--contracts-large", type=_positive, default=DEFAULT_LARGE,
                        help=f"contracts of the large batch and the replay (default "
                        f"{DEFAULT_LARGE}; the issue's: {ISSUE_LARGE})")
    parser.add_argument("--usage-events", type=_positive, default=DEFAULT_USAGE_EVENTS,
                        help=f"usage records put on Kafka for the ingest (default "
                        f"{DEFAULT_USAGE_EVENTS})")
    parser.add_argument("--ingest-runs", type=_positive, default=3,
                        help="times the ingest consumes the records, each beside a bare "
                             "consumer's run; the table shows the run of the median ratio "
                             "(default 3)")
    parser.add_argument("--ingest-batch-size", type=_positive, default=None,
                        help="`consume --batch-size` of the ingest (default: consume's own)")
    parser.add_argument("--batch-events", type=int, default=book.DEFAULT_EVENTS,
                        help="usage events per contract per month in the batch books "
                        f"(default {book.DEFAULT_EVENTS})")
    parser.add_argument("--seed", type=int, default=book.DEFAULT_SEED)
    parser.add_argument("--skip", type=_skip, default=set(),
                        help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    parser.add_argument("--profile", action="store_true",
                        help="run the measured billcycle steps under py-spy (pip install "
                        "py-spy into .venv) and print where their time goes; rates drop a "
                        "little")
    parser.add_argument("--postgres-url", help="a running server (URL of a database from "
                        "which others may be created) instead of a throwaway cluster")
    parser.add_argument("--kafka-bootstrap", help="a running broker instead of a throwaway one")
    parser.add_argument("--keep", action="store_true",
                        help="keep the books and the databases of an external server")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile and not PY_SPY.exists():
        print(f"bench: --profile needs {PY_SPY}: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    if args.contracts_large < args.contracts_small:
        print("bench: --contracts-large must be >= --contracts-small", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = Path(tempfile.mkdtemp(prefix="billcycle-bench-"))
    bench = Bench(args, stamp, work, code=code_version())
    steps = [s for s in STEPS if s not in args.skip]
    sizes = "the issue's sizes" if (args.contracts_small, args.contracts_large) == (
        ISSUE_SMALL, ISSUE_LARGE) else (f"the issue's sizes are --contracts-small {ISSUE_SMALL} "
                                        f"--contracts-large {ISSUE_LARGE}")
    say(f"steps {', '.join(steps)}; contracts {args.contracts_small:,} and "
        f"{args.contracts_large:,} ({sizes}); {args.usage_events:,} usage events on Kafka")
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as services:
            if set(steps) & {"ingest", "batch", "replay"}:
                services.enter_context(postgres(bench))
            if "ingest" in steps:
                services.enter_context(kafka(bench))
            for step in steps:
                getattr(bench, step)()
            if args.postgres_url and not args.keep:
                for name in bench.databases:
                    drop_database(args.postgres_url, name)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        out = RESULTS / f"{stamp}.json"
        out.write_text(json.dumps(document(bench, started), indent=2, default=str) + "\n")
    code = bench.code
    print(f"billcycle bench {stamp}: contracts {args.contracts_small:,} / "
          f"{args.contracts_large:,} ({sizes}), {args.usage_events:,} usage events; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; commit "
          f"{code['commit'][:10]}" + (f" with {len(code['changed'])} files changed in the working "
                                     "tree" if code["changed"] else ""))
    print(table(bench.figures))
    if bench.checks:
        print()
        print(checks_table(bench.checks))
    for label, summary in bench.profiles.items():
        print()
        print(render(label, summary))
    print(f"\nwritten to {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
