"""Kafka commands: `consume` (inbound topics) and `publish` (invoice events out).

`--bootstrap` defaults to env BILLCYCLE_KAFKA; topic names default to contract.md's and can be
changed by option or by env BILLCYCLE_TOPIC_<NAME> (CONTRACTS, USAGE, PAYMENTS, INVOICES,
DEADLETTER), which `run` and `retry` also read for their input manifest (`--kafka`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from domain.application import BillingApplication
from infra.cli_args import group_name, positive_int, positive_seconds
from infra.collector import tuned_for_bulk_work
from infra.store.url import store_env

if TYPE_CHECKING:
    from consumers.kafka_source import Topics
    from consumers.patience import Patience
    from infra.cli import Subcommands

T = TypeVar("T")

KAFKA_ENV = "BILLCYCLE_KAFKA"
DEFAULT_GROUP = "billcycle"
# `consume --until-caught-up` stopped (SIGTERM, Ctrl-C) before every inbound record was in the
# store: a script's next step (`run`) must not take it for caught up (QA15 M3).
NOT_CAUGHT_UP = 3
# Seconds `consume` or `publish --until-caught-up` tries to reach Kafka at the start before it
# gives up.
KAFKA_WAIT = 60.0


DEADLETTER_MAX_BYTES_ENV = "BILLCYCLE_DEADLETTER_MAX_BYTES"
# consumers.deadletter_topic's DEFAULT_MAX_BYTES and outbound's FITS_FROM + RECORD_OVERHEAD,
# without importing Kafka and the outbound models for every command (a unit test checks them).
DEFAULT_DEADLETTER_BYTES = 1_000_000
LEAST_DEADLETTER_BYTES = 32 * 1024


def _deadletter_bytes(text: str) -> int:
    """A dead-letter record's size limit: room for the letter's envelope at least."""
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < LEAST_DEADLETTER_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size in bytes of at least {LEAST_DEADLETTER_BYTES:,} (room for "
            "a dead letter's reason and source)")
    return value


def _topic_env(name: str) -> str:
    return f"BILLCYCLE_TOPIC_{name.upper()}"


# Kafka's own rule for a topic name; kafka-python raises only when it first sends to one
# (the dead-letter topic: at the first rejected record, long after start-up).
_LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topics(args: argparse.Namespace) -> Topics:
    from consumers.kafka_source import Topics
    from infra.cli import UserError

    names: dict[str, str] = {
        f.name: getattr(args, f"{f.name}_topic", None) or os.environ.get(_topic_env(f.name))
        or str(f.default)
        for f in fields(Topics)
    }
    for name, topic in names.items():
        if not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise UserError(
                f"{topic!r} (the {name} topic) is not a Kafka topic name: use 1 to 249 letters, "
                f"digits, '.', '_' or '-' (--{name}-topic or {_topic_env(name)})")
    return Topics(**names)


def topics_from_env() -> Topics:
    """The topics as the commands take them given no option: env BILLCYCLE_TOPIC_<NAME>, else
    contract.md's name; checked (UserError)."""
    return _topics(argparse.Namespace())


def _bootstrap(args: argparse.Namespace) -> str:
    from infra.cli import UserError

    if not args.bootstrap:
        raise UserError(f"no Kafka bootstrap server: give --bootstrap HOST:PORT or set {KAFKA_ENV}")
    return str(args.bootstrap)


def _check_kafka_args(args: argparse.Namespace) -> None:
    """The bootstrap server and topic names, refused before the store opens (`consume` makes
    it: refused after, they left an empty store behind)."""
    _bootstrap(args)
    _topics(args)


def store_label(url: str) -> str:
    """The store as progress messages name it, without credentials."""
    env = store_env(url)
    if "POSTGRES_HOST" in env:
        return (f"PostgreSQL at {env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}"
                f"/{env['POSTGRES_DBNAME']}")
    return f"SQLite database {env['SQLITE_DBNAME']}"


def _say(command: str) -> Callable[[str], None]:
    def say(text: str) -> None:
        print(f"{datetime.now(UTC):%H:%M:%S} billcycle {command}: {text}", file=sys.stderr,
              flush=True)

    return say


def command_patience(args: argparse.Namespace, app: BillingApplication) -> Patience:
    """The command's Patience (`args.command` names it in what it says). Every wait of a
    PostgreSQL store for a connection is named through it while it lasts, for any command:
    `waiting for PostgreSQL at ...: no answer for 6s`, then `... is back (after 40s)`."""
    from consumers.patience import Patience

    patience = Patience(_say(args.command), threading.Event())
    if "POSTGRES_HOST" in store_env(args.db):  # SQLite: no server to wait for
        from infra.store.postgres import PostgresBillingRecorder, tell_connection_waits

        recorder = cast(PostgresBillingRecorder, app.recorder)
        tell_connection_waits(recorder.datastore, store_label(args.db), patience)
    return patience


def _patience(args: argparse.Namespace) -> Patience:
    """The command's Patience, whose retry pauses end early on SIGTERM or Ctrl-C, for a clean
    stop."""
    patience: Patience = args.patience
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: patience.stop.set())
    return patience


def _emit(args: argparse.Namespace, document: dict[str, Any], say: Callable[[str], None]) -> None:
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        say("stopped: " + ", ".join(
            f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in document.items()
            if not isinstance(v, dict) and v != [] and v is not None))


def cmd_consume(args: argparse.Namespace, app: BillingApplication) -> None:
    from consumers.deadletter_topic import DeadLetterTopic, deadletter_producer
    from consumers.kafka_source import (
        KAFKA_DOWN,
        REJOIN_AFTER,
        KafkaIngest,
        inbound_consumer,
    )
    from consumers.patience import Stopped
    from infra.cli import UserError

    bootstrap, topics, patience = _bootstrap(args), _topics(args), _patience(args)
    store, kafka = store_label(args.db), f"Kafka at {bootstrap}"
    def fresh_consumer() -> Any:
        return inbound_consumer(bootstrap, args.group, args.batch_size, args.instance_id)

    consumer = producer = ingest = None
    try:
        consumer = _first_contact(args, patience, kafka, lambda seconds: inbound_consumer(
            bootstrap, args.group, args.batch_size, args.instance_id, seconds))

        def fresh_producer() -> Any:
            return deadletter_producer(bootstrap, max_bytes=args.deadletter_max_bytes)

        producer = patience.call(kafka, fresh_producer, KAFKA_DOWN)
        deadletters = DeadLetterTopic(app, producer, topics.deadletter, patience,
                                      store=store, kafka=kafka, bootstrap=bootstrap,
                                      max_bytes=args.deadletter_max_bytes,
                                      fresh_producer=fresh_producer)
        ingest = KafkaIngest(app, consumer, topics, deadletters, patience, store=store,
                             kafka=kafka, batch_size=args.batch_size,
                             fresh_consumer=fresh_consumer,
                             rejoin_after=args.rejoin_after or REJOIN_AFTER)
        with tuned_for_bulk_work(), _prompt_thread_switches():
            stats = ingest.run(until_caught_up=args.until_caught_up)
    except Stopped:  # before the first poll
        patience.say("stopped before consuming anything")
        if args.until_caught_up:
            raise UserError("stopped before caught up: nothing was consumed",
                            NOT_CAUGHT_UP) from None
        return
    finally:
        if ingest is not None:  # it may have replaced the consumer (a stuck join)
            consumer = ingest.consumer
        if consumer is not None:
            consumer.close()  # leaves the group: the others take over its partitions now
        if ingest is not None:  # it may have replaced the producer (a refused record)
            producer = ingest.deadletters.producer
        if producer is not None:
            producer.close(timeout=10)
    document = {
        "records": stats.records,
        "accepted": stats.accepted,
        "duplicates": stats.duplicates,
        "rejected": stats.rejected,
        "notes": stats.notes,  # accepted messages named on stderr (e.g. an overpayment)
        "batches": stats.batches,
        "records_per_second": round(stats.rate()),
        # Whether every record of the inbound topics that existed at the start is in the
        # store (--until-caught-up; false without it).
        "caught_up": ingest.caught_up,
        # The offset last applied per inbound partition, whoever owns it; null where nothing
        # was consumed yet.
        "positions": ingest.applied(),
        # Records not in the store per inbound partition, whoever owns it ...
        "lag": ingest.lag(),
        # ... and those this process did not own when it stopped.
        "not_owned": ingest.not_owned(),
        # Inbound topics that do not exist on Kafka: nothing of them was consumed.
        "missing_topics": ingest.missing,
        # Dead letters in the store only, the dead-letter topic missing: sent once it exists.
        "deadletters_held": ingest.deadletters.held,
    }
    _emit(args, document, patience.say)
    if args.until_caught_up and not ingest.caught_up:
        lag = {name: n for name, n in ingest.lag().items() if n}
        left = (f"{sum(lag.values()):,} records of the inbound topics are not in the store yet "
                f"({', '.join(f'{name} {n:,}' for name, n in lag.items())})" if lag
                else "no record was found missing, but the check was not finished")
        raise UserError(f"stopped before caught up: {left}; run it again to finish",
                        NOT_CAUGHT_UP)


def _first_contact(args: argparse.Namespace, patience: Patience, kafka: str,
                   connect: Callable[[float], T]) -> T:
    """`connect(seconds)` (a client that raises KafkaTimeoutError on a Kafka not reached within
    that many seconds), once Kafka answers: `consume`'s inbound consumer, `publish`'s producer.
    --until-caught-up gives up on a Kafka never reached within --kafka-wait seconds (a mistyped
    bootstrap must fail a month-end script, not hang it: QA15 M2); a service waits, and says
    that Kafka was never reached."""
    from consumers.kafka_source import KAFKA_DOWN
    from consumers.patience import error_line
    from infra.cli import UserError

    wait = args.kafka_wait if args.until_caught_up else None
    give_up = time.monotonic() + (wait or math.inf)

    def attempt() -> T:
        # Each try waits up to 10 s for an answer (kafka-python's default is 30), never past
        # the limit: a SIGTERM or Ctrl-C is heard only between tries.
        return connect(max(min(10.0, give_up - time.monotonic()), 1.0))

    what = f"{kafka} (not reached since the start: check --bootstrap or {KAFKA_ENV})"
    try:
        return patience.call(what, attempt, KAFKA_DOWN, give_up_after=wait)
    except KAFKA_DOWN as error:
        raise UserError(f"{kafka} was not reached within {wait:,.0f} s ({error_line(error)}): "
                        f"check --bootstrap or {KAFKA_ENV}, and that the broker is up; "
                        "--kafka-wait SECONDS waits longer") from error


@contextmanager
def _prompt_thread_switches() -> Iterator[None]:
    """The interpreter lock handed over every 1 ms instead of 5 while consuming.

    The writer thread's every statement, once answered, waits for the lock that the polling
    thread holds while it parses the next batch; the writer's transaction is what the polling
    thread then waits for. Nine alternating pairs of 100,000-record consumes: median 14,328 ->
    15,266/s, six of the nine faster, for about 0.2 CPU-s more.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def cmd_publish(args: argparse.Namespace, app: BillingApplication) -> None:
    from consumers.patience import Stopped
    from consumers.publisher import (
        InvoicePublisher,
        MissingOutputTopic,
        PublisherFenced,
        last_published,
        publisher_producer,
    )
    from infra.cli import UserError

    bootstrap, topics, patience = _bootstrap(args), _topics(args), _patience(args)
    kafka = f"Kafka at {bootstrap}"
    transactional_id = args.transactional_id or f"billcycle-publisher-{topics.invoices}"
    try:
        producer = _first_contact(args, patience, kafka, lambda seconds: publisher_producer(
            bootstrap, transactional_id, seconds))
    except Stopped:
        producer = None
    publisher = InvoicePublisher(
        app,
        lambda: publisher_producer(bootstrap, transactional_id),
        lambda: last_published(bootstrap, topics.invoices),
        topics.invoices,
        patience,
        store=store_label(args.db),
        kafka=kafka,
        transactional_id=transactional_id,
        page_size=args.page_size,
        producer=producer,
    )
    try:
        if producer is not None:
            publisher.run(until_caught_up=args.until_caught_up)
    except (PublisherFenced, MissingOutputTopic) as error:
        raise UserError(str(error)) from error
    except Stopped:
        pass
    stats = publisher.stats
    # Stopped before it read where to resume, resumed_after_log_position is null (QA15 L7: it
    # said 0, as if resumed from an empty topic), and reached_kafka says whether Kafka ever
    # answered.
    document = {"published": stats.published, "transactions": stats.transactions,
                "resumed_after_log_position": stats.resumed_after,
                "reached_kafka": producer is not None}
    if producer is None:
        patience.say(f"stopped before {kafka} was ever reached: nothing was published")
    elif stats.resumed_after is None:
        patience.say(f"stopped before the position to resume after was read from "
                     f"{topics.invoices}: nothing was published")
    _emit(args, document, patience.say)


def input_manifest(
    args: argparse.Namespace, app: BillingApplication
) -> Callable[[], dict[str, Any]] | None:
    """What `run` and `retry` record of their Kafka input, when Kafka is configured."""
    if not args.kafka:
        return None
    from consumers.kafka_source import input_manifest as manifest

    topics = _topics(args)
    return lambda: manifest(app, args.kafka, topics)


def _add_topic_options(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        parser.add_argument(f"--{name}-topic", metavar="TOPIC",
                            help=f"default: env {_topic_env(name)} or billing.{name}")


def _add_kafka_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kafka-wait", type=positive_seconds, metavar="SECONDS",
                        default=KAFKA_WAIT, help="with --until-caught-up, give up (exit 1) "
                        "when Kafka does not answer within this long at the start "
                        f"(default {KAFKA_WAIT:.0f})")


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
    kafka_help = f"Kafka bootstrap server HOST:PORT; env {KAFKA_ENV}"

    p = sub.add_parser("consume", help="consume the inbound Kafka topics into the store")
    p.add_argument("--bootstrap", default=os.environ.get(KAFKA_ENV), help=kafka_help)
    p.add_argument("--group", type=group_name,
                   default=os.environ.get("BILLCYCLE_CONSUMER_GROUP", DEFAULT_GROUP),
                   help="consumer group; processes of one group share the partitions "
                   f"(default {DEFAULT_GROUP}); env BILLCYCLE_CONSUMER_GROUP")
    p.add_argument("--instance-id", default=os.environ.get("BILLCYCLE_CONSUMER_ID"),
                   help="a name this process keeps across restarts (e.g. the pod name): "
                   "restarted, it takes its partitions back at once (static group "
                   "membership); env BILLCYCLE_CONSUMER_ID")
    p.add_argument("--until-caught-up", action="store_true",
                   help="stop once every record of the inbound topics, as they were at the "
                   "start, is in the store, whichever member of the group consumes it "
                   f"(exit {NOT_CAUGHT_UP} if stopped before; default: run until SIGTERM)")
    p.add_argument("--batch-size", type=positive_int, default=2000,
                   help="records per poll and per transaction (default 2000)")
    _add_kafka_wait(p)
    p.add_argument("--rejoin-after", type=positive_seconds, metavar="SECONDS",
                   help="still joining the group with no partition after this long, leave it "
                   "and join again as a fresh consumer (default: a minute)")
    p.add_argument("--deadletter-max-bytes", type=_deadletter_bytes, metavar="BYTES",
                   default=os.environ.get(DEADLETTER_MAX_BYTES_ENV,
                                          str(DEFAULT_DEADLETTER_BYTES)),
                   help="the most bytes a record on the dead-letter topic takes (at most its "
                   "max.message.bytes); a larger dead letter is sent with the record's bytes "
                   f"cut, the store keeping them all (default {DEFAULT_DEADLETTER_BYTES:,}); "
                   f"env {DEADLETTER_MAX_BYTES_ENV}")
    _add_topic_options(p, "contracts", "usage", "payments", "deadletter")
    p.set_defaults(handler=cmd_consume, creates_store=True, check_args=_check_kafka_args)

    p = sub.add_parser("publish", help="publish invoice events to Kafka, each exactly once")
    p.add_argument("--bootstrap", default=os.environ.get(KAFKA_ENV), help=kafka_help)
    p.add_argument("--until-caught-up", action="store_true",
                   help="stop at the end of the event log (default: follow it until SIGTERM)")
    _add_kafka_wait(p)
    p.add_argument("--page-size", type=positive_int, default=500,
                   help="events per Kafka transaction at most (default 500)")
    p.add_argument("--transactional-id",
                   help="default billcycle-publisher-<invoices topic>; one publisher per id")
    _add_topic_options(p, "invoices")
    p.set_defaults(handler=cmd_publish, check_args=_check_kafka_args)

    for name in ("run", "retry"):
        sub.action.choices[name].add_argument(
            "--kafka", metavar="BOOTSTRAP", default=os.environ.get(KAFKA_ENV),
            help=f"Kafka bootstrap server HOST:PORT (consume's and publish's --bootstrap): "
            f"record the Kafka input positions in the batch manifest and warn about input "
            f"not yet consumed; env {KAFKA_ENV}")
