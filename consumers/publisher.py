"""Kafka out: invoice events from the event store's log onto billing.invoices, each exactly once.

The publisher follows the application's notification log (the order events were stored in),
picks the invoice events, and sends each page of them in one Kafka transaction, keyed by
customer, with headers `event_id` (<aggregate id>:<version>) and `log_position`. It keeps no
position of its own: on start, after `init_transactions` has fenced any earlier instance with
the same transactional id and settled its open transaction, it reads the last committed
messages of every partition of the output topic and resumes after the highest
`log_position` there. A crash before a commit loses nothing (the open transaction is
aborted and sent again); a crash after it publishes nothing twice (the commit is on the topic,
so the resume position is past it).

The output topic must keep its messages (no deletion by retention or compaction of the
latest ones): it is the publisher's memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, ProducerFencedError

from consumers.kafka_source import (
    DATABASE_DOWN,
    KAFKA_DOWN,
    kafka_consumer,
    never_create_topics,
)
from consumers.outbound import InvoiceEvent, cash_message, collection_message, invoice_issued
from consumers.patience import Patience, Stopped
from domain.application import BillingApplication
from domain.collections import Collection
from domain.invoice import Invoice

PAGE_SIZE = 500
# How far back from a partition's end the resume scan reads first (records and markers).
TAIL_WINDOW = 64

# The event classes the @event decorator made (invisible to mypy).
_INVOICE: Any = Invoice
_COLLECTION: Any = Collection

Outgoing = tuple[str, InvoiceEvent]  # record key (customer id), message


class PublisherFenced(RuntimeError):
    """Another publisher with the same transactional id has taken over."""


class MissingOutputTopic(RuntimeError):
    """The output topic does not exist: the publisher never has the broker create it."""


def publisher_producer(bootstrap: str, transactional_id: str,
                       bootstrap_timeout: float = 30.0) -> Any:
    """The transactional producer of the output topic. It never has the broker create the
    topic (see `never_create_topics`): a mistyped `--invoices-topic` would otherwise become a
    new topic, holding nothing, and the whole log would be published again into it. Kafka not
    reached within `bootstrap_timeout` seconds, it raises KafkaTimeoutError."""
    producer = KafkaProducer(
        bootstrap_timeout_ms=int(bootstrap_timeout * 1000),
        allow_auto_create_topics=False,
        bootstrap_servers=bootstrap,
        client_id=f"billcycle-publish-{transactional_id}",
        transactional_id=transactional_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        reconnect_backoff_max_ms=5000,
        max_block_ms=30000,
        request_timeout_ms=15000,
        delivery_timeout_ms=30000,
    )
    never_create_topics(getattr(producer, "_metadata", None))
    return producer


def last_published(bootstrap: str, topic: str) -> int:
    """The highest log_position among the committed messages of `topic` (0: none).

    Every transaction publishes a contiguous stretch of the log, so the highest position on
    any partition is the end of the last committed transaction.
    """
    consumer = kafka_consumer(
        bootstrap_servers=bootstrap,
        client_id="billcycle-publish-resume",
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            raise MissingOutputTopic(
                f"topic {topic} (the invoice events' output topic) does not exist on Kafka at "
                f"{bootstrap}; billcycle publish does not create it: create it "
                f"(kafka-topics.sh --bootstrap-server {bootstrap} --create --topic {topic}, "
                "with no time or size retention and no compaction) or correct its name "
                "(--invoices-topic or BILLCYCLE_TOPIC_INVOICES)")
        begins = consumer.beginning_offsets(tps)
        ends = consumer.end_offsets(tps)
        return max(_tail_position(consumer, tp, begins[tp], ends[tp]) for tp in tps)
    finally:
        consumer.close()


def _tail_position(consumer: Any, tp: TopicPartition, begin: int, end: int) -> int:
    window = TAIL_WINDOW
    while True:
        start = max(begin, end - window)
        found = _highest_position(consumer, tp, start, end)
        if found is not None or start == begin:
            return found or 0
        window *= 8  # only aborted transactions and markers so far: look further back


def _highest_position(consumer: Any, tp: TopicPartition, start: int, end: int) -> int | None:
    consumer.assign([tp])
    consumer.seek(tp, start)
    highest: int | None = None
    deadline = time.monotonic() + 30
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise KafkaError(f"reading {tp.topic}/{tp.partition} offsets {start}..{end} "
                             "took more than 30s")
        for record in consumer.poll(timeout_ms=500).get(tp, []):
            position = dict(record.headers).get("log_position")
            if record.offset < end and position is not None:
                highest = max(highest or 0, int(position))
    return highest


@dataclass
class PublishStats:
    published: int = 0
    transactions: int = 0
    # The log position the publisher resumed after; None: stopped before it read it (QA15 L7).
    resumed_after: int | None = None
    started: float = field(default_factory=time.monotonic)


class InvoicePublisher:
    """Relays the invoice events of the log to the invoice topic, until caught up or stopped."""

    def __init__(
        self,
        app: BillingApplication,
        make_producer: Callable[[], Any],
        read_resume_position: Callable[[], int],
        topic: str,
        patience: Patience,
        *,
        store: str = "the database",
        kafka: str = "Kafka",
        transactional_id: str = "",
        page_size: int = PAGE_SIZE,
        idle_wait: float = 0.5,
        producer: Any = None,
    ) -> None:
        """`producer`: one the caller made to reach Kafka first (`billcycle publish`, giving
        up after --kafka-wait); the first start uses it instead of a new one."""
        self.app = app
        self.make_producer = make_producer
        self.read_resume_position = read_resume_position
        self.topic = topic
        self.patience = patience
        self.say = patience.say
        self.store = store
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.page_size = page_size
        self.idle_wait = idle_wait
        self.stats = PublishStats()
        self.producer: Any = None
        self._made = producer
        self.zones: dict[str, str] = {}  # contract id -> timezone
        self.messages: dict[str, Callable[[Notification], Outgoing]] = {
            get_topic(_INVOICE.InvoiceIssued): self._invoice_issued,
            get_topic(_INVOICE.PaymentApplied): self._cash,
            get_topic(_INVOICE.RefundPaid): self._cash,
            get_topic(_COLLECTION.Started): self._collection,
            get_topic(_COLLECTION.PaymentNoted): self._collection,
            get_topic(_COLLECTION.RefundNoted): self._collection,
            get_topic(_COLLECTION.ActionRecorded): self._collection,
            get_topic(_COLLECTION.Ended): self._collection,
        }

    def run(self, until_caught_up: bool = False) -> PublishStats:
        """Publish until the log's end (until_caught_up) or until stopped."""
        try:
            cursor = self.stats.resumed_after = self._start()
            while not self.patience.stop.is_set():
                head = self.patience.call(
                    self.store, lambda: self.app.recorder.max_notification_id() or 0,
                    DATABASE_DOWN)
                if head <= cursor:
                    if until_caught_up:
                        break
                    self.patience.wait(self.idle_wait)
                    continue
                cursor = self._publish_page(cursor, head)
        except Stopped:
            pass
        finally:
            for producer in (self.producer, self._made):
                if producer is not None:
                    producer.close(timeout=5)
        return self.stats

    def _start(self) -> int:
        """A new transactional producer (fencing older ones) and the position to resume after."""
        if self.producer is not None:
            self.producer.close(timeout=0)
            self.producer = None

        def start() -> int:
            producer, self._made = self._made or self.make_producer(), None
            try:
                # Kafka answers, but holds a new producer back (CONCURRENT_TRANSACTIONS, which
                # kafka-python retries) until a transaction of an earlier one, e.g. killed, is
                # aborted or its commit completed: not an outage, and said as what it is.
                with self.patience.watch(self._settling(), told="{}s so far"):
                    producer.init_transactions()
            except BaseException:
                producer.close(timeout=0)
                raise
            self.producer = producer
            return self.read_resume_position()

        position = self.patience.call(self.kafka, start, KAFKA_DOWN)
        self.say(f"publishing to {self.topic} after log position {position}")
        head = self.patience.call(
            self.store, lambda: self.app.recorder.max_notification_id() or 0, DATABASE_DOWN)
        if position > head:
            self.say(f"{self.topic} holds events up to log position {position} but the log "
                     f"ends at {head}: is this the right database, or was it restored from a "
                     "backup? Events up to that position will not be published again")
        return position

    def _settling(self) -> str:
        earlier = (f"an earlier publisher of transactional id {self.transactional_id}"
                   if self.transactional_id else "an earlier publisher")
        return (f"{self.kafka} to end the transaction {earlier} left open (aborted, or its "
                "commit completed) and fence that publisher off")

    def _publish_page(self, cursor: int, head: int) -> int:
        """Publish the invoice events in (cursor, head], up to a page; the new cursor."""
        notifications = self.patience.call(
            self.store,
            lambda: self.app.recorder.select_notifications(
                cursor + 1, self.page_size, stop=head, topics=list(self.messages)),
            DATABASE_DOWN)
        if not notifications:
            return head
        outgoing = self.patience.call(
            self.store, lambda: [self.messages[n.topic](n) for n in notifications],
            DATABASE_DOWN)
        try:
            with self.patience.watch(self.kafka):  # a commit waits for a broker that is away
                self._send(outgoing)
        except ProducerFencedError as error:
            raise PublisherFenced(
                f"another publisher with the same transactional id took over ({error}); "
                "run one publisher per output topic") from error
        except KafkaError as error:
            self.say(f"transaction not committed: {type(error).__name__}: {error}; "
                     "starting over from what the topic holds")
            return self._start()
        self.stats.published += len(outgoing)
        self.stats.transactions += 1
        last = notifications[-1].id
        return last if len(notifications) == self.page_size else head

    def _send(self, outgoing: list[Outgoing]) -> None:
        producer = self.producer
        producer.begin_transaction()
        for key, message in outgoing:
            producer.send(
                self.topic,
                key=key.encode(),
                value=message.model_dump_json().encode(),
                headers=[
                    ("event_id", message.event_id.encode()),
                    ("log_position", str(message.log_position).encode()),
                ],
            )
        producer.commit_transaction()

    # --- events to messages -----------------------------------------------------------------

    def _event(self, notification: Notification) -> Any:
        return self.app.mapper.to_domain_event(notification)

    def _invoice_issued(self, notification: Notification) -> Outgoing:
        event = self._event(notification)
        invoice = cast(Invoice, event.mutate(None))
        message = invoice_issued(invoice, notification.id, event.timestamp,
                                 self._timezone(invoice.contract_id))
        return invoice.customer_id, message

    def _as_of(self, notification: Notification) -> Any:
        """The event's aggregate as it stood just after the event."""
        return self.app.repository.get(
            UUID(str(notification.originator_id)), version=notification.originator_version)

    def _cash(self, notification: Notification) -> Outgoing:
        invoice = cast(Invoice, self._as_of(notification))
        return invoice.customer_id, cash_message(
            invoice, self._event(notification), notification.id,
            self._timezone(invoice.contract_id))

    def _timezone(self, contract_id: str) -> str:
        """The contract's timezone (BillingApplication.contract_timezone), read once per
        contract: it never changes."""
        if contract_id not in self.zones:
            self.zones[contract_id] = self.app.contract_timezone(contract_id)
        return self.zones[contract_id]

    def _collection(self, notification: Notification) -> Outgoing:
        collection = cast(Collection, self._as_of(notification))
        message = collection_message(collection, self._event(notification), notification.id)
        return collection.customer_id, message
