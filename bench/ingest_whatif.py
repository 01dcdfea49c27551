"""What a redesign of ingest would buy, measured: `python -m bench.ingest_whatif`.

The ingest target (0.6 of a bare kafka-python consumer) is missed by `billcycle consume` as it
is (bench/run.py). Two changes could lift it, and neither is made in the product: they are
what-ifs for a design decision, measured here on the same broker and records:

  - no meter fold: the meters left to the billing run, which folds the backlog before it reads
    anyway (consumers/meter_updates.py); done here by patching the child, not by an option;
  - two processes, each consuming half the records: a perfect static split (two topics, each
    with half the records), the most two `consume` processes could gain; a consumer group's
    rebalance and settling would only cost more.

Each variant consumes into a fresh database, beside a bare consumer's run of all the records,
and the table gives both rates and their ratio. Nothing here is a target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import run as bench_run
from bench.measure import Child, run_child
from consumers.kafka_source import Topics

# The child's meter fold switched off: after_batch does nothing and finish folds nothing, so
# every batch's usage stays in the backlog for the billing run.
NO_FOLD = (
    "import sys; from consumers.meter_updates import MeterUpdates as M; "
    "M.after_batch = lambda self: None; M.finish = lambda self: M.stop(self) or 0; "
    "from infra.cli import main; sys.exit(main(sys.argv[1:]))"
)
TOPIC_ROLES = ("contracts", "usage", "payments", "deadletter")


@dataclass(frozen=True)
class Variant:
    label: str
    processes: int
    fold: bool


VARIANTS = (
    Variant("consume as it is: one process, meters folded", 1, True),
    Variant("one process, no meter fold", 1, False),
    Variant("two processes, each half the records, meters folded", 2, True),
    Variant("two processes, each half the records, no meter fold", 2, False),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_whatif",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--usage-events", type=bench_run._positive, default=100_000)
    parser.add_argument("--runs", type=bench_run._positive, default=2)
    args = parser.parse_args(argv)
    settings = bench_run.parse_args(["--usage-events", str(args.usage_events)])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    bench = bench_run.Bench(settings, stamp, Path(tempfile.mkdtemp(prefix="billcycle-whatif-")))
    bench_run.RESULTS.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as services:
        services.enter_context(bench_run.postgres(bench))
        services.enter_context(bench_run.kafka(bench))
        topics = make_topics(bench)
        records = produce(bench, topics)
        for run in range(args.runs):
            for variant in VARIANTS:
                bare = bench.child("bare consumer", [
                    sys.executable, "-m", "bench.baselines", "kafka", "--bootstrap",
                    bench.kafka or "", "--topic", topics["all"].usage])
                rows.append(consume(bench, topics, variant, run, records, bare))
                bench_run.say(f"{variant.label}: {rows[-1]['ratio']:.2f} of bare")
    out = bench_run.RESULTS / f"{stamp}-ingest-whatif.json"
    out.write_text(json.dumps({"usage_events": records, "code": bench_run.code_version(),
                               "rows": rows}, indent=2) + "\n")
    print(f"ingest what-ifs, {records:,} usage records (not the product: see the docstring)")
    print(bench_run._grid(
        ["variant", "run", "wall s", "cpu s", "pg cpu s", "rate /s", "bare /s", "of bare",
         "stored", "metered", "backlog"],
        [[r["variant"], str(r["run"] + 1), f"{r['wall']:.2f}", f"{r['cpu']:.1f}",
          f"{r['pg_cpu']:.1f}", f"{r['rate']:,.0f}", f"{r['bare_rate']:,.0f}",
          f"{r['ratio']:.2f}", f"{r['stored']:,}", f"{r['metered']:,}",
          f"{r['backlog_batches']:,}"] for r in rows]))
    print(f"\nwritten to {out.relative_to(bench_run.REPO)}")
    return 0


def make_topics(bench: bench_run.Bench) -> dict[str, Topics]:
    """`all` holds every record, `a` and `b` half each; usage topics as the bench makes them."""
    from kafka.admin import KafkaAdminClient, NewTopic

    topics = {part: Topics(**{role: f"whatif-{bench.stamp}-{part}.{role}" for role in
                              (*TOPIC_ROLES, "invoices")}) for part in ("all", "a", "b")}
    admin = KafkaAdminClient(bootstrap_servers=bench.kafka)
    try:
        admin.create_topics([
            NewTopic(getattr(t, role), bench_run.USAGE_PARTITIONS if role == "usage" else 1, 1)
            for t in topics.values() for role in TOPIC_ROLES])
    finally:
        admin.close()
    return topics


def produce(bench: bench_run.Bench, topics: dict[str, Topics]) -> int:
    """The bench's usage records, every one on `all` and alternately on `a` and `b`."""
    sent, _ = bench.produce_usage(lambda n: (topics["all"].usage, topics["ab"[n % 2]].usage))
    return sent


def consume(bench: bench_run.Bench, topics: dict[str, Topics], variant: Variant, run: int,
            records: int, bare: Child) -> dict[str, Any]:
    db = bench.database(f"whatif_{run}_{variant.processes}{'f' if variant.fold else 'n'}")
    start = [sys.executable, "-m", "infra.cli"] if variant.fold else [
        sys.executable, "-c", NO_FOLD]
    parts = ["all"] if variant.processes == 1 else ["a", "b"]
    commands = [
        " ".join(["env", *(f"BILLCYCLE_TOPIC_{role.upper()}={getattr(topics[part], role)}"
                           for role in TOPIC_ROLES), *(f"'{arg}'" for arg in start),
                  "--db", db, "--json", "consume", "--bootstrap", bench.kafka or "",
                  "--group", f"whatif-{bench.stamp}-{run}-{part}-{variant.fold}",
                  "--until-caught-up"])
        for part in parts]
    child = run_child(["sh", "-c", " & ".join(commands) + " & wait"], env=bench_run.child_env(),
                      cwd=bench_run.REPO, log=bench.log,
                      servers={"postgres": bench.pg_pid, "kafka": bench.kafka_pid})
    consumed = sum(doc["records"] for doc in documents(child.stdout))
    if consumed != records:
        raise SystemExit(f"{variant.label}: consumed {consumed:,} of {records:,} records; "
                         f"see {bench.log}")
    metered, backlog = bench_run.metered_usage(db)
    return {"variant": variant.label, "run": run, "processes": variant.processes,
            "fold": variant.fold, "wall": child.wall, "cpu": child.cpu,
            "pg_cpu": child.servers_cpu.get("postgres", 0.0),
            "kafka_cpu": child.servers_cpu.get("kafka", 0.0), "rate": records / child.wall,
            "bare_rate": records / bare.wall, "ratio": bare.wall / child.wall,
            "stored": bench_run.count_usage_records(db), "metered": metered,
            "backlog_batches": backlog}


def documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents the children printed one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


if __name__ == "__main__":
    sys.exit(main())
