"""Kafka in: the inbound topics through the one ingest pipeline, each record's effect exactly once.

Each batch of records of one topic-partition is applied in one database transaction together
with that partition's position (an eventsourcing `Tracking` named `kafka:<topic>:<partition>`
holding the offset of the batch's last record). Kafka's own committed offsets are not used:
on assignment the consumer seeks to the stored position + 1, so a crash anywhere repeats at
most work whose effect was never committed. Any number of processes share the partitions in
one consumer group (cooperative-sticky assignment); the tracking record only ever moves
forward and every message id is applied once, so even a member that lost its partitions
without noticing cannot apply a record twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar, cast

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProcessRecorder,
    Tracking,
)
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError
from kafka.structs import MemberState

from consumers import kafka_join, kafka_records
from consumers.inbound_survey import InboundSurvey, has_records
from consumers.meter_updates import MeterUpdates
from consumers.origins import KAFKA_SOURCE_PREFIX, OFFSET_PREFIX
from consumers.patience import Patience, Stopped, error_line
from consumers.pipeline import DEFAULT_BATCH, IngestPipeline, Parsed, parse
from domain.application import BillingApplication, ConcurrentUpdate, IngestReport
from domain.commands import Origin, Rejected

if TYPE_CHECKING:
    from consumers.deadletter_topic import DeadLetterTopic

T = TypeVar("T")

POLL_TIMEOUT_MS = 500
FIRST_POLLS_TIMEOUT_MS = 50  # while no partition is assigned yet

# A database that is restarting or unreachable; anything else is a bug and stops the consumer.
DATABASE_DOWN: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
KAFKA_DOWN: tuple[type[Exception], ...] = (KafkaError,)

# The reason a record without a value is rejected. Its dead letter's raw is "" like that of an
# empty value, whose reason is "empty: ..." (consumers/messages/errors.py).
TOMBSTONE = ("tombstone: the record has no value (null), Kafka's deletion marker for its key; "
             "billcycle's inbound topics take messages, not deletions: send one JSON object "
             "per message")

# Seconds an assignment must stay unchanged before --until-caught-up may call it caught up.
SETTLED_AFTER = 2.0
# Every partition's stored position and end offset are surveyed this often (for the lag of the
# partitions other members own) ...
SURVEY_EVERY = 5.0
# ... and this often while --until-caught-up waits for them, its own partitions caught up.
SURVEY_WAITING = 1.0
# Without partitions this long after subscribing, the progress line says the join is slow.
SLOW_JOIN = 30.0
# Rebalancing this long (a join takes a second or two), the progress line says that the group
# is likely waiting for members that stopped answering, and what --instance-id does for it.
WAITING_FOR_MEMBERS = 5.0
# How long the group waits for a member that stopped answering (consumer session timeout).
SESSION_TIMEOUT_MS = 15000
# Still joining, with no partition, this long after subscribing (or after it was last in its
# group): the member leaves and joins again as a fresh consumer (`KafkaIngest._rejoin_if_stuck`).
REJOIN_AFTER = 60.0


@dataclass(frozen=True)
class Topics:
    """The topic names of contract.md §1; each can be overridden."""

    contracts: str = "billing.contracts"
    usage: str = "billing.usage"
    payments: str = "billing.payments"
    invoices: str = "billing.invoices"
    deadletter: str = "billing.deadletter"

    @property
    def inbound(self) -> tuple[str, ...]:
        return (self.contracts, self.usage, self.payments)

    def setting(self, topic: str) -> str:
        """Which of the topics this one is: `usage` (its --usage-topic, BILLCYCLE_TOPIC_USAGE)."""
        return next(f.name for f in fields(self) if getattr(self, f.name) == topic)


def tracking_name(tp: TopicPartition) -> str:
    """The name of a topic-partition's stored position: `kafka:<topic>:<partition>`."""
    return f"kafka:{tp.topic}:{tp.partition}"


def partition_label(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def process_recorder(app: BillingApplication) -> ProcessRecorder:
    """The application's recorder, which also keeps tracking records."""
    recorder = app.recorder
    if not isinstance(recorder, ProcessRecorder):
        raise TypeError(f"{type(recorder).__name__} keeps no tracking records; "
                        "the Kafka consumer needs a process recorder")
    return recorder


def stored_positions(app: BillingApplication, tps: Sequence[TopicPartition]) -> dict[
        TopicPartition, int | None]:
    """The offset of the last record applied from each partition (None: none yet)."""
    recorder = process_recorder(app)
    return {tp: recorder.max_tracking_id(tracking_name(tp)) for tp in tps}


def never_create_topics(cluster: Any) -> None:
    """Make a kafka-python client's metadata requests never have the broker create a topic.

    kafka-python 3.0.12 builds every metadata request from its cluster metadata's own config,
    which its connection manager makes without the client's `allow_auto_create_topics`: asked
    about a topic that does not exist, a broker with `auto.create.topics.enable` (the
    default) creates it. The setting is put where those requests read it.
    """
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "allow_auto_create_topics" in config:
        config["allow_auto_create_topics"] = False


# kafka-python's retry backoff for metadata (its default), and what it grows to at each check
# that finds an inbound topic still missing (see `KafkaIngest._back_off_metadata`).
METADATA_BACKOFF_MS = 100
METADATA_BACKOFFS_MS = (500, 1000, 2000, 3000)


def metadata_retry_backoff(cluster: Any, ms: int) -> None:
    """Set how long a kafka-python client waits before it asks the broker again for the
    metadata of a subscribed topic that does not exist.

    kafka-python 3.0.12 retries such a topic every `retry_backoff_ms` of its cluster metadata,
    100 ms, and its connection manager makes that without the client's own `retry_backoff_ms`:
    the setting is put where the retries read it.
    """
    config = getattr(cluster, "config", None)
    if isinstance(config, dict) and "retry_backoff_ms" in config:
        config["retry_backoff_ms"] = ms


def kafka_consumer(**config: Any) -> Any:
    """A KafkaConsumer that never makes the broker create a topic it asks about.

    Without it, a mistyped inbound topic was created by the subscription's metadata requests
    and `consume` read it, empty, as caught up (see `never_create_topics`).
    """
    consumer = KafkaConsumer(allow_auto_create_topics=False, **config)
    never_create_topics(getattr(consumer, "_cluster", None))
    return consumer


def inbound_consumer(bootstrap: str, group: str, batch_size: int = DEFAULT_BATCH,
                     instance_id: str | None = None, bootstrap_timeout: float = 30.0) -> Any:
    """A consumer of the inbound topics, tuned for large batches; positions come from the DB.

    With `instance_id` the process is a static member of the group: restarted under the same
    id, it takes its partitions back at once instead of after the session timeout. Kafka not
    reached within `bootstrap_timeout` seconds, it raises KafkaTimeoutError.
    """
    consumer = kafka_consumer(
        bootstrap_timeout_ms=int(bootstrap_timeout * 1000),
        bootstrap_servers=bootstrap,
        client_id=f"billcycle-consume-{instance_id}" if instance_id else "billcycle-consume",
        group_id=group,
        group_instance_id=instance_id,
        enable_auto_commit=False,  # positions live in the database, with the events
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        partition_assignment_strategy=(CooperativeStickyAssignor,),
        max_poll_records=batch_size,
        # Big fetches: a partition's next batch is usually buffered while this one is applied.
        # (2 MiB per partition made the first fetch come 0.13 s sooner, but a batch cut short
        # at each fetch's end cost as much: 61 transactions instead of 52 per 100,000 records.)
        fetch_min_bytes=64 * 1024,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        # A database outage stops polling; stay in the group through a long one.
        max_poll_interval_ms=15 * 60 * 1000,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1000,  # rebalances (two rounds when cooperative) finish sooner
        reconnect_backoff_max_ms=5000,
    )
    kafka_records.install(consumer)  # the same records, read at half the CPU
    kafka_join.install(consumer)  # every join round finished, however short the polls
    return consumer


@dataclass
class ConsumeStats:
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    notes: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, records: int, report: IngestReport) -> None:
        self.records += records
        self.accepted += report.accepted
        self.duplicates += report.duplicates
        self.rejected += len(report.rejected)
        self.notes += len(report.notes)
        self.batches += 1

    def rate(self) -> float:
        return self.records / max(time.monotonic() - self.started, 1e-9)


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes assignment changes for the polling thread, and holds new partitions paused.

    The listener runs on the client's IO thread, where blocking on the database would stall
    heartbeats; the polling thread reads the stored positions and seeks (see `_settle`).
    """

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.changes: list[tuple[bool, set[TopicPartition]]] = []

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.consumer.pause(*assigned)  # nothing is fetched before the seek to the stored position
        with self.lock:
            self.changes.append((True, set(assigned)))

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        with self.lock:
            self.changes.append((False, set(revoked)))

    def take(self) -> list[tuple[bool, set[TopicPartition]]]:
        with self.lock:
            changes, self.changes = self.changes, []
        return changes


class KafkaIngest:
    """Consumes the inbound topics into the billing application until caught up or stopped."""

    def __init__(
        self,
        app: BillingApplication,
        consumer: Any,
        topics: Topics,
        deadletters: DeadLetterTopic,
        patience: Patience,
        *,
        store: str = "the database",
        kafka: str = "Kafka",
        batch_size: int = DEFAULT_BATCH,
        report_every: float = 5.0,
        probe_after: float = 3.0,
        fresh_consumer: Callable[[], Any] | None = None,
        rejoin_after: float = REJOIN_AFTER,
    ) -> None:
        self.app = app
        self.pipeline = IngestPipeline(app)
        self.consumer = consumer
        self.topics = topics
        self.deadletters = deadletters
        self.patience = patience
        self.say = patience.say
        self.store = store
        self.kafka = kafka
        self.batch_size = batch_size
        self.report_every = report_every
        self.probe_after = probe_after
        # Makes a consumer to take this one's place when its join is stuck; None: never.
        self.fresh_consumer = fresh_consumer
        self.rejoin_after = rejoin_after
        self.stats = ConsumeStats()
        # Inbound topics that do not exist on Kafka (a mistyped name, or not created yet):
        # said when found, looked for again every `probe_after` seconds, and named in every
        # report. The dead-letter topic's absence is its DeadLetterTopic's `missing`.
        self.missing: list[str] = []
        self._topics_checked = time.monotonic()
        # While one is missing, kafka-python asks for it again after this many ms.
        self.metadata_backoff_ms = METADATA_BACKOFF_MS
        self._checks_missing = 0  # checks in a row that found an inbound topic missing
        self.rebalances = _Rebalances(consumer)
        # Per owned partition: the next offset to apply (stored position + 1) ...
        self.positions: dict[TopicPartition, int] = {}
        # ... and its end offset when it was assigned, for --until-caught-up.
        self.ends: dict[TopicPartition, int] = {}
        # End offsets learnt since, for the lag report.
        self.latest_ends: dict[TopicPartition, int] = {}
        # Per owned partition, the offset after the last record a poll returned: once that is
        # applied, the consumer's position (past any transaction markers) is too.
        self._returned: dict[TopicPartition, int] = {}
        # Every inbound partition, owned or not: what the store holds of it (see
        # consumers/inbound_survey.py); the partitions of other members are looked into by a
        # consumer outside the group.
        self.survey = InboundSurvey(lambda: kafka_consumer(
            bootstrap_servers=getattr(self.consumer, "config", {}).get("bootstrap_servers"),
            client_id="billcycle-consume-survey", group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", max_partition_fetch_bytes=64 * 1024))
        self.until_caught_up = False
        self.caught_up = False
        self._lag_at_stop: dict[TopicPartition, int] | None = None
        self._reported = (time.monotonic(), 0)
        self._last_records = time.monotonic()
        self._assignment_changed = time.monotonic()
        # Since when this member has been joining: its subscription, or the last time it was
        # seen in its group (owning partitions, or a stable member).
        self._joining_since = time.monotonic()
        # One writer thread applies batches strictly in order, one at a time, each in its own
        # transaction with its own position, while this thread polls and parses the next
        # batch (psycopg lets go of the GIL while the server works).
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        # Folds the meter backlog behind the writer (see consumers/meter_updates.py).
        self._meters: MeterUpdates | None = None

    def run(self, until_caught_up: bool = False) -> ConsumeStats:
        """Consume until stopped or, with `until_caught_up`, until every record of every
        partition of the inbound topics that existed at the start is in the store, whoever owns
        the partition (and this process's own partitions are at their end offsets)."""
        self.until_caught_up = until_caught_up
        self._subscribe()
        self._check_topics()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer")
        self._meters = MeterUpdates(self.app, DATABASE_DOWN)
        caught_up = False
        try:
            self._survey()  # the targets: the end offsets at the start
            while not self.patience.stop.is_set():
                batches = self.patience.call(self.kafka, self._poll, KAFKA_DOWN)
                self._settle()
                for tp, records in batches.items():
                    self._consume(tp, records)
                if batches:
                    self._last_records = time.monotonic()
                elif time.monotonic() - self._last_records > self.probe_after:
                    self._probe()
                if time.monotonic() - self.survey.at >= SURVEY_EVERY:
                    self._survey()
                self._report()
                self._recheck_topics()
                self._rejoin_if_stuck()
                if until_caught_up and self._caught_up():
                    caught_up = True
                    break
            self._drain()
        except Stopped:
            pass
        finally:
            # A batch in flight commits or fails as a whole before the consumer goes.
            self._writer.shutdown(wait=True)
            self._meters.stop()
        if caught_up and self._nothing_to_consume():
            self.say(f"stopping: {self._missing_text()}")
        elif caught_up and self.missing:
            self.say(f"caught up with the inbound topics that exist; {self._missing_text()}")
        with suppress(Stopped):  # stopped while the database is away: repaired at the next start
            self.deadletters.settle()
        if caught_up:  # what was consumed is in the meters too
            self.patience.call(self.store, self._meters.finish, DATABASE_DOWN)
        with suppress(Stopped):  # the lag said at the stop counts every partition
            self._survey()
        self.survey.close()
        self.caught_up = caught_up
        self._report(force=True)
        self._lag_at_stop = self._lags()  # the consumer, closed next, knows it no more
        return self.stats

    def _drain(self) -> None:
        """Wait for the batch in flight; its failure is raised here, in the polling thread."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def lag(self) -> dict[str, int]:
        """Records not yet applied per inbound partition: an owned one's as far as the last
        fetch knows, another's as far as the last survey of the store knows."""
        lags = self._lags() if self._lag_at_stop is None else self._lag_at_stop
        return {partition_label(tp): n for tp, n in lags.items()}

    def _lags(self) -> dict[TopicPartition, int]:
        lag = {tp: self.survey.lag(tp) for tp in self.survey.partitions}
        assigned = self.consumer.assignment()
        for tp, position in self.positions.items():
            end = self.consumer.highwater(tp) if tp in assigned else None
            end = max(end or 0, self.ends.get(tp, 0), self.latest_ends.get(tp, 0))
            if tp in assigned and position >= self._returned.get(tp, 0):
                # Everything returned is applied: offsets after it up to the consumer's
                # position hold only transaction markers, which are never applied.
                position = max(position, self.consumer.position(tp))
            lag[tp] = max(end - position, 0)
        return dict(sorted(lag.items()))

    def applied(self) -> dict[str, int | None]:
        """The offset last applied per inbound partition (None: nothing yet), owned or not."""
        applied = {tp: seen.stored for tp, seen in self.survey.partitions.items()}
        applied.update({tp: p - 1 if p > 0 else None for tp, p in self.positions.items()})
        return {partition_label(tp): offset for tp, offset in sorted(applied.items())}

    def not_owned(self) -> list[str]:
        """The inbound partitions this process does not own."""
        return [partition_label(tp) for tp in sorted(self.survey.partitions)
                if tp not in self.positions]

    # --- steps ------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self.rebalances = _Rebalances(self.consumer)
        self.consumer.subscribe(list(self.topics.inbound), listener=self.rebalances)
        self._joining_since = time.monotonic()
        # A fresh consumer in a stuck one's place keeps its back-off.
        metadata_retry_backoff(getattr(self.consumer, "_cluster", None), self.metadata_backoff_ms)

    def _check_topics(self) -> None:
        """Note the inbound topics and the dead-letter topic that do not exist on Kafka, and
        say what changed.

        The consumer asks the broker for every topic's metadata, which also makes a topic
        created since part of its subscription at once (without the question, kafka-python
        would notice it only at its next periodic refresh, 5 minutes later). The dead-letter
        topic is looked for in the same answer, not through its producer: a question about
        every topic never has one created, and leaves no missing topic in the producer's list
        of those it asks about (kafka-python asks again every 0.1 s while one is missing).
        """
        self._topics_checked = time.monotonic()
        exist = self.patience.call(self.kafka, self.consumer.topics, KAFKA_DOWN)
        missing = [t for t in self.topics.inbound if t not in exist]
        for topic in missing:
            if topic not in self.missing:
                name = self.topics.setting(topic)
                self.say(f"topic {topic} does not exist on {self.kafka}: nothing is consumed from "
                         f"it until it is created; check its name (--{name}-topic or "
                         f"BILLCYCLE_TOPIC_{name.upper()})")
        for topic in self.missing:
            if topic not in missing:
                self.say(f"topic {topic} exists now")
        self.missing = missing
        self._back_off_metadata()
        deadletters = self.topics.deadletter in exist
        if deadletters == self.deadletters.missing:  # changed: dead letters kept for it are sent
            self._drain()  # from this thread, none being published meanwhile
            self.deadletters.found(deadletters)

    def _back_off_metadata(self) -> None:
        """While an inbound topic is missing, have kafka-python ask for it less and less often.

        A subscribed topic that does not exist made it ask the broker 10 times a second (the
        subscription's metadata requests fail for it, and each failure is retried after 100
        ms) whenever it refreshed the subscription's metadata: at the join, after every
        rebalance, every 5 minutes. The topic being created is still seen within
        `probe_after` seconds, by `_check_topics`, whose question about every topic ends
        those retries; the back-off only spaces out the retries in between.
        """
        self._checks_missing = self._checks_missing + 1 if self.missing else 0
        self.metadata_backoff_ms = (
            METADATA_BACKOFFS_MS[min(self._checks_missing, len(METADATA_BACKOFFS_MS)) - 1]
            if self._checks_missing else METADATA_BACKOFF_MS)
        metadata_retry_backoff(getattr(self.consumer, "_cluster", None), self.metadata_backoff_ms)

    def _recheck_topics(self) -> None:
        """While a topic is missing, look for it again every `probe_after` seconds."""
        if ((self.missing or self.deadletters.missing)
                and time.monotonic() - self._topics_checked >= self.probe_after):
            self._check_topics()

    def _nothing_to_consume(self) -> bool:
        return len(self.missing) == len(self.topics.inbound)

    def _missing_text(self) -> str:
        """The inbound topics missing; when all are, what to do first of all."""
        if self._nothing_to_consume():
            return (f"no inbound topic exists on {self.kafka} ({', '.join(self.missing)}): "
                    "nothing is consumed until they are created; create them or correct their "
                    "names (--contracts-topic, --usage-topic, --payments-topic or "
                    "BILLCYCLE_TOPIC_<NAME>)")
        plural = len(self.missing) > 1
        return (f"topic{'s' if plural else ''} {', '.join(self.missing)} "
                f"{'do' if plural else 'does'} not exist on {self.kafka}")

    def _rejoin_if_stuck(self) -> None:
        """A member still joining, with no partition, `rejoin_after` seconds after subscribing
        (or after it was last seen in its group) leaves the group and joins again as a fresh
        consumer.

        A join takes a second or two. This is the backstop for a join that does not end: a
        join round kafka-python left unfinished kept a member `rebalancing` for good until
        `kafka_join` (installed by `inbound_consumer`) made it finish every round, and a
        JoinGroup lost on the way would be waited for as long as the rebalance timeout
        (`max_poll_interval_ms`, 15 minutes, so that a database outage does not cost the
        membership). A member that owns no partition has nothing to hand over, so a fresh one
        in its place takes nothing from the others. (While another member keeps the group
        waiting, the fresh one waits too, and this repeats every `rejoin_after`.)
        """
        if self.fresh_consumer is None:
            return
        now = time.monotonic()
        member = None if self.positions else self.consumer.group_metadata()
        if member is None or member.state == MemberState.STABLE:
            self._joining_since = now  # in the group: a rebalance from here on is timed anew
            return
        waited = now - self._joining_since
        if waited < self.rejoin_after:
            return
        self.say(f"no partition assigned to this member of group {member.group_id} after "
                 f"{waited:,.0f} s of joining: leaving the group and joining it again")
        self._drain()
        with suppress(KafkaError):
            self.consumer.close(autocommit=False, timeout_ms=5000)
        self.consumer = self.patience.call(self.kafka, self.fresh_consumer, KAFKA_DOWN)
        self._subscribe()

    def _poll(self) -> dict[TopicPartition, list[Any]]:
        # Until partitions are assigned and sought, a poll can return nothing (they are paused
        # on assignment) and would wait its whole timeout: a short one lets the seek follow
        # the assignment at once (half a second of every start).
        timeout = POLL_TIMEOUT_MS if self.positions else FIRST_POLLS_TIMEOUT_MS
        return cast(dict[TopicPartition, list[Any]], self.consumer.poll(timeout_ms=timeout))

    def _probe(self) -> None:
        """Nothing fetched for a while: ask the broker for the end offsets and the database for
        the stored positions. The answers update the lag; no answer means one of them is away,
        and waiting for it is said (the Kafka client itself reconnects silently)."""
        self._last_records = time.monotonic()
        self._drain()
        owned = sorted(self.positions)
        stored = self.patience.call(
            self.store, lambda: stored_positions(self.app, owned), DATABASE_DOWN)
        for tp, offset in stored.items():
            if offset is not None and offset + 1 > self.positions[tp]:
                self.say(f"{partition_label(tp)} was moved on to offset {offset + 1} by another "
                         "consumer; is a process of another group sharing this database?")
                self.positions[tp] = offset + 1
        tps = sorted(self.consumer.assignment()) or self._inbound_partitions()
        if not tps:  # no inbound topic exists: said when found, and in every progress line
            if not self.missing:  # gone since they were looked for
                self._check_topics()
            return
        ends = self.patience.call(
            self.kafka, lambda: self.consumer.end_offsets(tps, timeout_ms=3000), KAFKA_DOWN)
        self.latest_ends.update({tp: end for tp, end in ends.items() if tp in self.positions})

    def _inbound_partitions(self) -> list[TopicPartition]:
        """Every partition of the inbound topics that exist, as the client's metadata knows
        them (a topic it does not know yet is asked for)."""
        # A missing topic is not asked about here: kafka-python would ask the broker about
        # every topic for each one, and `_check_topics` looks for them.
        return [TopicPartition(topic, p)
                for topic in self.topics.inbound if topic not in self.missing
                for p in sorted(self.consumer.partitions_for_topic(topic) or ())]

    def _survey(self) -> None:
        """Ask the database for every inbound partition's stored position and Kafka for its
        first and end offsets (see consumers/inbound_survey.py)."""
        tps = self._inbound_partitions()
        stored = self.patience.call(
            self.store, lambda: stored_positions(self.app, tps), DATABASE_DOWN)
        begins, ends = self.patience.call(
            self.kafka,
            lambda: (self.consumer.beginning_offsets(tps, timeout_ms=3000),
                     self.consumer.end_offsets(tps, timeout_ms=3000)) if tps else ({}, {}),
            KAFKA_DOWN)
        self.survey.update(stored, begins, ends)

    def _settle(self) -> None:
        """Apply the assignment changes of the last poll: forget revoked partitions, seek new
        ones to their stored positions, note their end offsets, and let them flow."""
        added: set[TopicPartition] = set()
        changes = self.rebalances.take()
        if changes:
            self._assignment_changed = time.monotonic()
            self._drain()  # positions settle only once the batch in flight is done
        for assigned, tps in changes:
            if assigned:
                added |= tps
            else:
                added -= tps
                for tp in tps:
                    self.positions.pop(tp, None)
                    self.ends.pop(tp, None)
                    self.latest_ends.pop(tp, None)
                    self._returned.pop(tp, None)
        added &= self.consumer.assignment()
        if not added:
            return
        ordered = sorted(added)
        stored = self.patience.call(
            self.store, lambda: stored_positions(self.app, ordered), DATABASE_DOWN)
        for tp in ordered:
            offset = stored[tp]
            if offset is None:
                self.consumer.seek_to_beginning(tp)
                self.positions[tp] = 0
            else:
                self.consumer.seek(tp, offset + 1)
                self.positions[tp] = offset + 1
        begins, ends = self.patience.call(
            self.kafka,
            lambda: (self.consumer.beginning_offsets(ordered), self.consumer.end_offsets(ordered)),
            KAFKA_DOWN)
        # Known before the dead letters are repaired: a stop while they are sent reports the
        # partition's lag, not 0 for an end offset never learnt (QA15 H1).
        self.ends.update(ends)
        self.deadletters.recover(stored)
        for tp in ordered:
            if 0 < self.positions[tp] < begins[tp]:
                self.say(f"{partition_label(tp)}: offsets {self.positions[tp]} to "
                         f"{begins[tp] - 1} were deleted (retention) before they were consumed; "
                         f"continuing from {begins[tp]}")
        self.consumer.resume(*ordered)
        self.say("assigned " + ", ".join(
            f"{partition_label(tp)} from offset {self.positions[tp]}" for tp in ordered))
        if any(tp.topic in self.missing for tp in ordered):  # created since: no longer missing
            self._check_topics()

    def _consume(self, tp: TopicPartition, records: list[Any]) -> None:
        start = self.positions.get(tp)
        if start is None:  # revoked since the fetch
            return
        self._returned[tp] = records[-1].offset + 1
        fresh = [r for r in records if r.offset >= start]
        for i in range(0, len(fresh), self.batch_size):
            chunk = fresh[i:i + self.batch_size]
            parsed = self._parse(tp, chunk)  # while the previous batch is written
            self._drain()
            assert self._writer is not None
            self._pending = self._writer.submit(self._apply, tp, chunk, parsed)

    @staticmethod
    def _origins(tp: TopicPartition, records: list[Any]) -> list[Origin]:
        source = f"{KAFKA_SOURCE_PREFIX}{partition_label(tp)}"
        return [
            Origin(source, f"{OFFSET_PREFIX}{r.offset}", b"" if r.value is None else r.value)
            for r in records
        ]

    @classmethod
    def _parse(cls, tp: TopicPartition, records: list[Any]) -> Parsed:
        """The records validated; a tombstone (a record without a value) is rejected as one,
        not as the empty message its stored bytes (none) would read as."""
        origins = cls._origins(tp, records)
        if all(r.value is not None for r in records):  # nearly always
            return parse(origins)
        kept = [o for o, r in zip(origins, records, strict=True) if r.value is not None]
        parsed = parse(kept)
        tombstones = [Rejected(o, TOMBSTONE) for o, r in zip(origins, records, strict=True)
                      if r.value is None]
        return Parsed(parsed.commands, parsed.rejected + tombstones)

    def _apply(self, tp: TopicPartition, records: list[Any], parsed: Parsed) -> None:
        """One transaction: the records' effects and the partition's new position.

        Runs on the writer thread, one batch at a time in the order submitted.
        """
        last = records[-1].offset
        tracking = Tracking(tracking_name(tp), last)
        while True:
            try:
                with self.patience.watch(self.store):
                    report = self.pipeline.apply(parsed, tracking)
                break
            except DATABASE_DOWN as error:
                self.say(f"waiting for {self.store}: {error_line(error)}")
                self.patience.wait(self.patience.first)
            except (IntegrityError, ConcurrentUpdate) as error:
                # Someone else moved this partition on (a previous owner, or our own commit
                # whose acknowledgement was lost): apply only what is still missing.
                self.say(f"{partition_label(tp)}: {error_line(error)}; rereading its position")
            stored = self.patience.call(
                self.store, lambda: stored_positions(self.app, [tp])[tp], DATABASE_DOWN)
            if stored is not None:
                records = [r for r in records if r.offset > stored]
                self.positions[tp] = max(self.positions[tp], stored + 1)
            if not records:
                return
            parsed = self._parse(tp, records)
        self.positions[tp] = last + 1
        assert self._meters is not None
        self._meters.after_batch()
        self.stats.add(len(records), report)
        for note in report.notes:  # accepted, but for an operator to look at
            self.say(f"{partition_label(tp)}: {note}")
        keys = {f"{OFFSET_PREFIX}{r.offset}": r.key for r in records} if report.rejected else {}
        self.deadletters.publish(tp, report.rejected, keys, settled_through=last)

    def _caught_up(self) -> bool:
        if self.consumer.group_metadata().state != MemberState.STABLE:
            return False
        # A cooperative rebalance moves partitions in two rounds: a member that has nothing
        # after the first may get partitions in the second. Only a settled assignment counts.
        if time.monotonic() - self._assignment_changed < SETTLED_AFTER:
            return False
        for tp in self.consumer.assignment():
            if tp not in self.ends:
                return False  # assigned, not yet sought
            if self.consumer.position(tp) < self.ends[tp]:
                return False
        # Its own partitions done, the others' records must be in the store too: their
        # owners consume them, and those of a member that stopped answering come to the
        # members left once its session times out (QA15 H2).
        if time.monotonic() - self.survey.at >= SURVEY_WAITING:
            self._survey()
        return not self._waiting_for()

    def _waiting_for(self) -> list[TopicPartition]:
        """The partitions this process does not own whose records up to their targets are not
        all in the store yet."""
        return [tp for tp in sorted(self.survey.partitions)
                if tp not in self.positions and not self._in_store(tp)]

    def _in_store(self, tp: TopicPartition) -> bool:
        return self.patience.call(
            self.kafka, lambda: self.survey.in_store(tp, self.probe_after), KAFKA_DOWN)

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        since, records_then = self._reported
        if not force and now - since < self.report_every:
            return
        self._reported = (now, self.stats.records)
        s = self.stats
        rate = (s.records - records_then) / max(now - since, 1e-3)
        counts = (f"consumed {s.records:,} records ({rate:,.0f}/s lately): {s.accepted:,} "
                  f"accepted, {s.duplicates:,} duplicates, {s.rejected:,} rejected")
        missing = [self._missing_text()] if self.missing else []
        if self.deadletters.missing:
            missing.append(self.deadletters.missing_text())
        if self._nothing_to_consume():
            # No lag or group state explains it: the missing topics first, and what to do.
            self.say("; ".join([*missing, counts]))
            return
        lags = self._lags()
        others = {tp: n for tp, n in lags.items() if tp not in self.positions and n}
        where = [counts]
        # With no partition, a lag of 0 would read as caught up: say what it is instead.
        if self.positions or others:
            where.append(self._lag_text(lags, others))
        if not self.positions:
            where.append(self._membership())
        short = [tp for tp in others if self.survey.short(tp)]
        if self.until_caught_up and not self.caught_up and short:
            where.append(self._waiting_text(short))
        self.say("; ".join([*where, *missing]))

    def _lag_text(self, lags: dict[TopicPartition, int],
                  others: dict[TopicPartition, int]) -> str:
        """The lag, and apart from it that of the partitions this process does not own."""
        mine = {tp: n for tp, n in lags.items() if tp in self.positions}
        total = sum(mine.values()) + sum(others.values())
        if not others:
            return f"lag {total:,}" + (f" ({busiest(mine)})" if any(mine.values()) else "")
        text = f"lag {total:,}: {sum(mine.values()):,} in this process's partitions"
        if any(mine.values()):
            text += f" ({busiest(mine)})"
        return (text + f", {sum(others.values()):,} in partitions it does not own "
                f"({busiest(others)})")

    def _waiting_text(self, others: list[TopicPartition]) -> str:
        """Why --until-caught-up goes on: records of partitions this process does not own."""
        member = self.consumer.group_metadata()
        holder = (f"held by other members of group {member.group_id}"
                  if member.state == MemberState.STABLE
                  else f"not assigned to this process yet (group {member.group_id} is "
                  "rebalancing)")
        config = getattr(self.consumer, "config", {})
        timeout = config.get("session_timeout_ms", SESSION_TIMEOUT_MS) / 1000
        text = (f"not caught up: {', '.join(partition_label(tp) for tp in others)} "
                f"{'are' if len(others) > 1 else 'is'} not all in the store yet, {holder}")
        if self.patience.stop.is_set():
            return text
        return (text + "; waiting for them: a live member consumes its partitions, and those "
                "of a member that stopped answering come to the members left after its "
                f"session timeout ({timeout:,.0f} s for billcycle consume)")

    def _membership(self) -> str:
        """Why this member has no partition: still finding its group or joining it, or a
        member whose group gave it none."""
        member = self.consumer.group_metadata()
        group = member.group_id
        if member.state == MemberState.STABLE:
            return (f"no partition assigned to this member of group {group} (generation "
                    f"{member.generation_id}): the group has no partition left for it")
        waited = time.monotonic() - self._joining_since
        doing = ("rebalancing" if member.state == MemberState.REBALANCING
                 else "finding the group's coordinator or joining")
        held = member.state == MemberState.REBALANCING and waited >= WAITING_FOR_MEMBERS
        text = f"no partition assigned to this member of group {group} yet ({doing}"
        if waited >= SLOW_JOIN:
            text += (f", for {waited:,.0f} s where a join takes a second or two: see what "
                     f"the broker's log says of group {group}")
        elif held:
            text += f", for {waited:,.0f} s"
        if held:
            text += "; " + self._members_gone()
        return text + ")"

    def _members_gone(self) -> str:
        """The usual reason of a long rebalance: members killed or stopped without leaving,
        which the group waits for until their session times out (QA12 F7)."""
        config = getattr(self.consumer, "config", {})
        timeout = config.get("session_timeout_ms", SESSION_TIMEOUT_MS) / 1000
        text = (f"the group is likely waiting for members that stopped answering (a consumer "
                f"killed, or stopped without leaving the group): each is dropped up to the "
                f"session timeout ({timeout:,.0f} s) after it last answered, and each restart "
                "before then leaves one more")
        if config.get("group_instance_id"):
            return text
        return (text + "; give each consumer its own --instance-id (static membership, "
                "docs/kafka.md): one restarted under its id takes its place at once")


def busiest(lag: dict[TopicPartition, int]) -> str:
    """The four partitions with the most records waiting: `billing.usage/2 1,200, ...`."""
    top = sorted(lag.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{partition_label(tp)} {n:,}" for tp, n in top if n)


# --- what a billing run records of its input ----------------------------------------------------

def input_manifest(
    app: BillingApplication, bootstrap: str, topics: Topics, timeout: float = 10.0
) -> dict[str, Any]:
    """A billing run's record of its Kafka input: the stored position of every inbound
    partition, the end offsets at the run's start, and warnings about input not yet consumed.
    """
    try:
        consumer = kafka_consumer(
            bootstrap_servers=bootstrap,
            client_id="billcycle-run-manifest",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(timeout * 1000) + 1000,
        )
    except KafkaError as error:
        return {"input_positions": {}, "kafka_end_offsets": {}, "warnings": [
            f"Kafka at {bootstrap} did not answer ({error_line(error)}); this run's input "
            "positions are not recorded and input still waiting in Kafka is not checked"]}
    try:
        partitions = {topic: sorted(consumer.partitions_for_topic(topic) or ())
                      for topic in topics.inbound}
        tps = [TopicPartition(topic, p) for topic in topics.inbound for p in partitions[topic]]
        stored = stored_positions(app, tps)
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout * 1000)) if tps else {}
        begins = consumer.beginning_offsets(tps, timeout_ms=int(timeout * 1000)) if tps else {}
        warnings = [
            # run and retry have no topic options: only the variable names it for them.
            f"topic {topic} does not exist on Kafka at {bootstrap}: nothing of it is checked; "
            f"check the topic's name (env BILLCYCLE_TOPIC_{topics.setting(topic).upper()})"
            for topic in topics.inbound if not partitions[topic]]
        for tp in tps:
            after = stored[tp]
            start = begins[tp] if after is None else max(after + 1, begins[tp])
            waiting = ends[tp] - start
            if waiting > 0 and has_records(consumer, tp, start, ends[tp], timeout):
                kept = "nothing consumed yet" if after is None else f"stored position {after}"
                warnings.append(
                    f"{partition_label(tp)}: up to {waiting:,} record{'s' if waiting > 1 else ''}"
                    " not yet "
                    f"consumed ({kept}, end offset {ends[tp]}); "
                    f"{'usage' if tp.topic == topics.usage else 'input'} still waiting to be "
                    "consumed is not billed by this run (billcycle consume --until-caught-up)")
        return {
            "input_positions": {tracking_name(tp): stored[tp] for tp in tps},
            "kafka_end_offsets": {tracking_name(tp): ends[tp] for tp in tps},
            "warnings": warnings,
        }
    except KafkaError as error:
        return {"input_positions": {}, "kafka_end_offsets": {}, "warnings": [
            f"Kafka at {bootstrap}: {error_line(error)}; this run's input positions are "
            "not recorded and input still waiting in Kafka is not checked"]}
    finally:
        consumer.close()
