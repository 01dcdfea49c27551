"""Rejected Kafka records onto the dead-letter topic, after the transaction that rejected them.

The store's dead letters (`billcycle deadletters`) are written in the same transaction as the
partition's position: exactly once. The topic copy can only be sent after that commit; it is
flushed before the partition moves on, and a mark `kafka-deadletter:<topic>:<partition>`
(a tracking record: the offset up to which the topic copy is complete) is written after the
flush. A batch without rejections has nothing to send: its mark waits (`settle`) until the
consumer stops, instead of costing every batch a transaction of its own. When a partition is
assigned and its mark is behind its stored position (after a crash, or taken from another
consumer of the group), the dead letters in between are sent again from the store: after a
clean batch there are none.
So the topic is at least once: consumers dedupe on (source_topic, source_partition,
source_offset), which every dead letter carries in its value and its headers.

The producer never has the broker create the topic: a mistyped name would otherwise become a
topic nobody reads. While the topic does not exist (KafkaIngest asks the broker, `found`),
consuming goes on and the dead letters wait in the store, their partitions' marks held back;
once it exists they are sent from the store like those a crash kept from it.

A dead letter wraps the record (escaped, or in base64), so it can be larger than the record,
and than the topic takes. Each record sent is kept within `max_bytes` (key, value, headers
and the batch's overhead; a default below the broker's default of about 1 MB), its raw cut
and marked where needed (`outbound.fitted`); one the broker still refuses as too large (the
topic takes less) is sent without raw (`outbound.stripped`). Either way the partition moves
on, and the store keeps the record in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import IntegrityError, Tracking
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError

from consumers.kafka_source import (
    DATABASE_DOWN,
    KAFKA_DOWN,
    never_create_topics,
    process_recorder,
)
from consumers.origins import KAFKA_SOURCE_PREFIX, OFFSET_PREFIX
from consumers.patience import Patience
from domain.application import BillingApplication, dead_letter_record
from domain.commands import Rejected

if TYPE_CHECKING:  # the outbound models cost a consumer's start 0.1 s: imported when used
    from consumers.outbound import DeadLetter

FLUSH_TIMEOUT = 30.0

# The most bytes a record on the dead-letter topic takes, by default: below the 1 MiB that a
# broker's message.max.bytes, a topic's max.message.bytes and kafka-python's max_request_size
# default to, whatever the record batch adds.
DEFAULT_MAX_BYTES = 1_000_000
# What a record batch of one record adds to its key, value and headers, with room to spare
# (kafka-python counts 61 + 21 bytes and the varints).
RECORD_OVERHEAD = 512


def deadletter_producer(bootstrap: str, client_id: str = "billcycle-deadletter",
                        max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """A producer for the dead-letter topic that never makes the broker create a topic.

    Without it, a mistyped dead-letter topic was created at the first rejected record (its
    metadata request asks for it), and the dead letters went where nobody reads them (see
    `never_create_topics`).
    """
    producer = KafkaProducer(
        allow_auto_create_topics=False,
        bootstrap_servers=bootstrap,
        client_id=client_id,
        max_request_size=max_bytes,  # DeadLetterTopic keeps every record within it
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        reconnect_backoff_max_ms=5000,
        # Fail a send within the flush timeout, so an outage is retried (and said) promptly.
        delivery_timeout_ms=int(FLUSH_TIMEOUT * 1000),
        request_timeout_ms=10000,
        max_block_ms=int(FLUSH_TIMEOUT * 1000),
    )
    never_create_topics(getattr(producer, "_metadata", None))
    return producer


def mark_name(tp: TopicPartition) -> str:
    return f"kafka-deadletter:{tp.topic}:{tp.partition}"


class DeadLetterTopic:
    """Sends dead letters to the dead-letter topic, and repairs what a crash kept from it."""

    def __init__(
        self,
        app: BillingApplication,
        producer: Any,
        topic: str,
        patience: Patience,
        *,
        store: str = "the database",
        kafka: str = "Kafka",
        bootstrap: str = "HOST:PORT",
        max_bytes: int = DEFAULT_MAX_BYTES,
        fresh_producer: Callable[[], Any] | None = None,
    ) -> None:
        self.app = app
        self.producer = producer
        self.topic = topic
        self.max_bytes = max_bytes
        # A producer in this one's place after the broker refused a record: kafka-python's
        # idempotent producer fails every later send then. None: keep this one (tests).
        self.fresh_producer = fresh_producer
        self.patience = patience
        self.store = store
        self.kafka = kafka
        self.bootstrap = bootstrap
        # Per partition, the last offset of a batch published since the last mark, which had
        # no dead letters: complete on the topic, marked by `settle`.
        self._unmarked: dict[TopicPartition, int] = {}
        # Whether the topic does not exist on Kafka, as last found. While it does not, a
        # partition's dead letters wait in the store: the offset through which they are
        # committed (its mark stays behind it), and the letters waiting, by source position.
        self.missing = False
        self._held: dict[TopicPartition, int] = {}
        self._waiting: set[tuple[str, str]] = set()

    @property
    def held(self) -> int:
        """How many dead letters wait in the store for the topic to exist."""
        return len(self._waiting)

    def publish(
        self,
        tp: TopicPartition,
        rejected: Sequence[Rejected],
        keys: Mapping[str, bytes | None],
        settled_through: int,
    ) -> None:
        """Send a committed batch's rejections (`keys`: the records' keys by position), and
        mark the partition's topic copy complete through the batch's last offset: at once
        after rejections, at `settle` after a batch without any. While the topic is missing,
        the partition's dead letters wait in the store (`found` sends them)."""
        if tp in self._held or (rejected and self.missing):
            self._hold(tp, settled_through,
                       [(r.origin.source, r.origin.position) for r in rejected])
            return
        if not rejected:
            self._unmarked[tp] = settled_through
            return
        entries = [dead_letter_record(r) for r in rejected]
        from consumers.outbound import dead_letter  # its models only when there are letters

        self._send([(dead_letter(e), keys.get(e["at"])) for e in entries])
        self._mark(tp, settled_through)
        self._unmarked.pop(tp, None)

    def found(self, exists: bool) -> None:
        """Note whether the topic exists on Kafka; once it does again, send the dead letters
        that waited for it (from the polling thread, while no batch is being published)."""
        if self.missing == (not exists):  # as it was
            return
        self.missing = not exists
        if self.missing:
            self.patience.say(
                f"topic {self.topic} (the dead-letter topic) does not exist on {self.kafka}: "
                "rejected records are kept as dead letters in the database (billcycle "
                "deadletters) and sent to it once it exists; create it (kafka-topics.sh "
                f"--bootstrap-server {self.bootstrap} --create --topic {self.topic}) or correct "
                "its name (--deadletter-topic or BILLCYCLE_TOPIC_DEADLETTER)")
            return
        self.patience.say(f"topic {self.topic} exists now")
        held, self._held = self._held, {}
        self._waiting.clear()
        self._send_behind(held, ": kept in the database while it did not exist")

    def missing_text(self) -> str:
        """What the progress line says of a missing topic and the dead letters waiting for it."""
        text = f"the dead-letter topic {self.topic} does not exist on {self.kafka}"
        if not self._waiting:
            return text
        n = len(self._waiting)
        return f"{n:,} dead letter{'s' if n > 1 else ''} kept in the database only: {text}"

    def settle(self) -> None:
        """Mark every partition complete through its last published batch: the next start
        then finds no gap to repair. Dead letters still waiting for the topic are said."""
        while self._unmarked:
            tp, offset = self._unmarked.popitem()
            self._mark(tp, offset)
        if self._waiting:
            self.patience.say(
                f"{self.missing_text()}; the next consume sends them once it exists: create it "
                f"(kafka-topics.sh --bootstrap-server {self.bootstrap} --create --topic "
                f"{self.topic}) or correct its name (--deadletter-topic or "
                "BILLCYCLE_TOPIC_DEADLETTER)")

    def recover(self, stored: Mapping[TopicPartition, int | None]) -> None:
        """Send again the dead letters of newly assigned partitions the topic may lack."""
        self._send_behind({tp: position for tp, position in stored.items()
                           if position is not None},
                          ": kept in the database, not known to have reached it before the "
                          "last stop")

    def _send_behind(self, through: Mapping[TopicPartition, int], why: str) -> None:
        """Send the store's dead letters of each partition from its mark to `through`, and mark
        it; while the topic is missing, those with dead letters wait in the store."""
        recorder = process_recorder(self.app)
        marks = self.patience.call(
            self.store, lambda: {tp: recorder.max_tracking_id(mark_name(tp)) for tp in through},
            DATABASE_DOWN)
        gaps: dict[str, tuple[TopicPartition, int, int]] = {}
        for tp, position in through.items():
            mark = marks[tp]
            if mark is None or mark < position:
                source = f"{KAFKA_SOURCE_PREFIX}{tp.topic}/{tp.partition}"
                gaps[source] = (tp, -1 if mark is None else mark, position)
        if not gaps:
            return
        from consumers.outbound import dead_letter  # its models only when there are letters

        letters = self.patience.call(self.store, self.app.dead_letters, DATABASE_DOWN)
        behind: dict[TopicPartition, list[dict[str, Any]]] = {}
        for entry in letters:
            gap = gaps.get(entry["source"])
            if gap is not None and gap[1] < int(entry["at"].removeprefix(OFFSET_PREFIX)) <= gap[2]:
                behind.setdefault(gap[0], []).append(entry)
        if behind and not self.missing:
            sent = [dead_letter(e) for entries in behind.values() for e in entries]
            said = f"{len(sent)} dead letter{'' if len(sent) == 1 else 's'}"
            self.patience.say(f"sending {said} to {self.topic}{why}")
            self._send([(letter, None) for letter in sent])
            behind = {}  # every gap is complete on the topic now
        for tp, _, position in gaps.values():
            if tp in behind:  # the topic is missing: they wait, the mark held back
                self._hold(tp, position, [(e["source"], e["at"]) for e in behind[tp]])
            else:
                self._mark(tp, position)

    def _hold(self, tp: TopicPartition, through: int, letters: Sequence[tuple[str, str]]) -> None:
        """Keep a partition's dead letters through `through` in the store only, its mark back."""
        self._held[tp] = max(self._held.get(tp, through), through)
        self._waiting.update(letters)
        self._unmarked.pop(tp, None)

    def _send(self, letters: Sequence[tuple[DeadLetter, bytes | None]]) -> None:
        """Send and flush the letters, each within `max_bytes`; those the broker refuses as
        too large are sent again without raw, so none holds its partition up."""
        pending = [self._fitted(letter, key) for letter, key in letters]
        while pending:
            pending = self.patience.call(f"{self.kafka} (dead-letter topic {self.topic})",
                                         partial(self._send_once, pending), KAFKA_DOWN)
            if pending and self.fresh_producer is not None:
                self.producer.close(timeout=10)
                self.producer = self.patience.call(self.kafka, self.fresh_producer, KAFKA_DOWN)

    def _fitted(self, letter: DeadLetter, key: bytes | None) -> tuple[DeadLetter, bytes | None]:
        """The letter cut to what the record's room leaves it (`outbound.fitted`); a key that
        would leave it too little is dropped (as a dead letter sent again has none)."""
        from consumers.outbound import FITS_FROM, fitted

        room = self.max_bytes - RECORD_OVERHEAD - sum(
            len(name) + len(value) for name, value in _headers(letter))
        if key is not None and room - len(key) < FITS_FROM:
            key = None
        return fitted(letter, room - len(key or b"")), key

    def _send_once(self, letters: Sequence[tuple[DeadLetter, bytes | None]]
                   ) -> list[tuple[DeadLetter, bytes | None]]:
        """Send and flush; what to send again after the broker refused some as too large:
        those without raw, and the rest not acknowledged (the refusal fails the producer)."""
        from consumers.outbound import stripped

        futures: list[tuple[DeadLetter, bytes | None, Any]] = []
        refused: list[tuple[DeadLetter, bytes | None]] = []
        for letter, key in letters:
            try:
                futures.append((letter, key, self.producer.send(
                    self.topic, value=letter.model_dump_json().encode(), key=key,
                    headers=_headers(letter))))
            except MessageSizeTooLargeError:  # the producer's own limit
                refused.append((letter, key))
        self.producer.flush(timeout=FLUSH_TIMEOUT)
        failed: list[tuple[DeadLetter, bytes | None]] = []
        error: KafkaError | None = None
        for letter, key, future in futures:
            try:
                future.get(timeout=0)  # raises the send's error, or a timeout if it hangs
            except MessageSizeTooLargeError:
                refused.append((letter, key))
            except KafkaError as failure:
                failed.append((letter, key))
                error = failure
        if not refused:
            if error is not None:
                raise error
            return []
        again = [(stripped(letter), key) for letter, key in refused
                 if not letter.raw_truncated or letter.raw]
        for letter, _ in refused:
            if letter.raw_truncated and not letter.raw:  # the topic takes less than FITS_FROM
                self.patience.say(
                    f"the dead-letter topic {self.topic} refused the dead letter of "
                    f"{letter.source_topic}/{letter.source_partition} offset "
                    f"{letter.source_offset} as too large even without the record: it is kept "
                    "in the database only (billcycle deadletters); raise the topic's "
                    "max.message.bytes")
        if again:
            self.patience.say(
                f"the dead-letter topic {self.topic} refused {len(again)} dead "
                f"letter{'' if len(again) == 1 else 's'} as too large: sent again without the "
                "record's bytes (raw_truncated; the database keeps them: billcycle "
                "deadletters); its max.message.bytes is below --deadletter-max-bytes "
                f"({self.max_bytes:,}): lower that, or raise the topic's")
        return again + failed

    def _mark(self, tp: TopicPartition, offset: int) -> None:
        recorder = process_recorder(self.app)

        def mark() -> None:
            with contextlib.suppress(IntegrityError):  # already marked as far or further
                recorder.insert_tracking(Tracking(mark_name(tp), offset))

        self.patience.call(self.store, mark, DATABASE_DOWN)


def _headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The record headers repeating the source position."""
    return [
        ("source_topic", letter.source_topic.encode()),
        ("source_partition", str(letter.source_partition).encode()),
        ("source_offset", str(letter.source_offset).encode()),
    ]
