"""The outbound messages: invoice events on `billing.invoices` and rejected input on
`billing.deadletter`, one pydantic model each; consumers/schemas/ carries their JSON Schemas.

Every message on `billing.invoices` names the stored event it comes from (`event_id`, also a
record header) and that event's position in billcycle's event log (`log_position`), so a
consumer can drop a message it has already seen. Fields and message types may be added later:
consumers should ignore fields and types they do not know.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from eventsourcing.domain import Aggregate
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, WithJsonSchema

from consumers.origins import KAFKA_SOURCE_PREFIX, OFFSET_PREFIX
from domain.collections import Collection
from domain.invoice import Invoice
from domain.invoice_lines import LineKind
from domain.ledger import DocumentPayment, posting_day, reapplied_by
from domain.money import ZERO, format_money
from infra.views import invoice_view

_DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

Amount = Annotated[
    Decimal,
    # Plain notation always: str(Decimal) writes small quantities as "1E-7".
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_PATTERN, "examples": ["1005.00"]}),
]
"""A decimal as a JSON string, plain notation, negative for credits: "-12.50"."""

Money = Annotated[
    Decimal,
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema({
        "type": "string", "pattern": _DECIMAL_PATTERN, "examples": ["1005.00"],
        "description": "Money: a decimal string with exactly the currency's minor units "
        "(ISO 4217: USD \"600.00\", JPY \"50000\", KWD \"39.130\"), negative for credits."}),
]
"""An amount of money as a JSON string with the currency's minor units: written by
`_money`, never as the producer wrote it."""


class OutboundMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class InvoiceEvent(OutboundMessage):
    """Fields of every message on billing.invoices."""

    type: str = Field(description="The message kind.")
    event_id: str = Field(
        description="<aggregate id>:<version> of the stored event: unique; dedupe on it. "
        "Also the record header event_id."
    )
    log_position: int = Field(
        ge=1,
        description="The event's position in billcycle's event log; increases along each "
        "partition. Also the record header log_position.",
    )
    occurred_at: datetime = Field(description="When billcycle recorded the event (UTC).")


class Line(OutboundMessage):
    component_id: str
    kind: LineKind
    description: str
    quantity: Amount
    unit_amount: Amount | None = None
    amount: Money
    period_start: date
    period_end: date = Field(description="Exclusive: the line covers [period_start, period_end).")


class InvoiceDocument(InvoiceEvent):
    """An issued invoice as `billcycle invoices --json` shows it, less paid, refunded and
    balance: they change after issue, and payment.applied and refund.applied carry them."""

    invoice_id: str
    number: str = Field(description="INV-000001, INV-000002, ... gapless in issue order.")
    document_type: Literal["invoice", "credit_note"]
    batch_id: str
    contract_id: str
    customer_id: str = Field(description="Also the record key.")
    currency: str
    issue_date: date
    due_date: date
    timezone: str | None = Field(
        default=None,
        description="The contract's IANA timezone: its periods and dates are in it, and the "
        "ledger posts the document's payments and refunds on their day in it (posted_on). "
        "Absent on messages relayed before billcycle carried it.")
    total: Money
    subtotals: dict[str, Money] = Field(description="Per line kind.")
    lines: list[Line]


class InvoiceIssued(InvoiceDocument):
    """An invoice was issued (total >= 0)."""

    type: Literal["invoice.issued"]
    document_type: Literal["invoice"]


class CreditNoteIssued(InvoiceDocument):
    """A credit note was issued: an invoice whose total is negative."""

    type: Literal["credit_note.issued"]
    document_type: Literal["credit_note"]


class PaymentReapplied(OutboundMessage):
    """A payment of the document applied before this one whose parts this one changed: dated
    later, it settles what the document owes after this one (billcycle's ledger posts a
    reapplication entry on the payment's own day for the change)."""

    payment_id: str
    posted_on: date = Field(description="The payment's accounting date (its own posted_on).")
    to_receivable: Money = Field(description="Its part settling the document from now on.")
    to_customer_credit: Money = Field(description="Its part held as customer credit from "
                                      "now on (its amount less to_receivable).")


class RefundReapplied(OutboundMessage):
    """A refund of the document paid before this one whose parts this one changed: dated
    later, it draws on what the credit note holds after this one (billcycle's ledger posts a
    reapplication entry on the refund's own day for the change)."""

    refund_id: str
    posted_on: date = Field(description="The refund's accounting date (its own posted_on).")
    from_receivable: Money = Field(description="Its part paid of the credit note's open "
                                   "amount from now on.")
    from_customer_credit: Money = Field(description="Its part paid of customer credit from "
                                        "now on (its amount less from_receivable).")


_SPLIT_ABSENT = " Absent on messages relayed before billcycle carried it."


class PaymentApplied(InvoiceEvent):
    """A payment was applied to an invoice; paid and balance are the invoice's after it."""

    type: Literal["payment.applied"]
    invoice_id: str
    number: str
    contract_id: str
    customer_id: str = Field(description="Also the record key.")
    currency: str
    payment_id: str = Field(description="The id of the payment.received message.")
    amount: Money
    received_at: datetime = Field(description="When the payment was received: an instant "
                                  "(the payment.received message's occurred_at).")
    posted_on: date | None = Field(
        default=None,
        description="The accounting date: the day billcycle's ledger posts the payment, "
        "received_at's day in the contract's timezone, or the issue date if that is later. "
        "Payments of one document and day settle it in log order. Absent on messages relayed "
        "before billcycle carried it.")
    to_receivable: Money | None = Field(
        default=None,
        description="The part of amount that settles the document, as billcycle's ledger "
        "posts it on posted_on: credited to Assets:Receivable (what the document owed, the "
        "payments taken in the order of their posted_on)." + _SPLIT_ABSENT)
    to_customer_credit: Money | None = Field(
        default=None,
        description="The rest of amount, beyond what the document owed: credited to "
        "Liabilities:CustomerCredit on posted_on." + _SPLIT_ABSENT)
    reapplied: list[PaymentReapplied] | None = Field(
        default=None,
        description="The document's payments dated after this one and applied before it "
        "whose parts it changed, with their new parts: move each change between "
        "Assets:Receivable and Liabilities:CustomerCredit on that payment's posted_on. Empty "
        "when none." + _SPLIT_ABSENT)
    paid: Money
    balance: Money


class RefundApplied(InvoiceEvent):
    """Money was paid back to the customer of what the document held for them (a credit
    note's amount, or paid beyond what an invoice owed); refunded and balance are the
    document's after it."""

    type: Literal["refund.applied"]
    invoice_id: str
    number: str
    contract_id: str
    customer_id: str = Field(description="Also the record key.")
    currency: str
    refund_id: str = Field(description="The id of the refund.paid message.")
    amount: Money
    paid_at: datetime = Field(description="When the refund was paid: an instant (the "
                              "refund.paid message's occurred_at).")
    posted_on: date | None = Field(
        default=None,
        description="The accounting date: the day billcycle's ledger posts the refund, "
        "paid_at's day in the contract's timezone, or the issue date if that is later. "
        "Absent on messages relayed before billcycle carried it.")
    from_receivable: Money | None = Field(
        default=None,
        description="The part of amount paid of a credit note's open amount, as billcycle's "
        "ledger posts it on posted_on: debited to Assets:Receivable (the refunds taken in "
        "the order of their posted_on; 0 on an invoice)." + _SPLIT_ABSENT)
    from_customer_credit: Money | None = Field(
        default=None,
        description="The rest of amount, paid of customer credit: debited to "
        "Liabilities:CustomerCredit on posted_on." + _SPLIT_ABSENT)
    reapplied: list[RefundReapplied] | None = Field(
        default=None,
        description="The document's refunds dated after this one and paid before it whose "
        "parts it changed, with their new parts: move each change between Assets:Receivable "
        "and Liabilities:CustomerCredit on that refund's posted_on. Empty when none."
        + _SPLIT_ABSENT)
    refunded: Money
    balance: Money


class CollectionEvent(InvoiceEvent):
    """Fields of every collection (dunning) message."""

    invoice_number: str
    customer_id: str = Field(description="Also the record key.")
    contract_id: str
    currency: str
    outstanding: Money = Field(
        description="What the invoice still owes after the event: its total less the payments "
        "plus the refunds noted on the collection, the balance payment.applied and "
        "refund.applied state (negative: what it holds for the customer, paid beyond it and "
        "not paid back).")


class CollectionStep(OutboundMessage):
    step: str = Field(description="<kind>+<days after the due date>, e.g. reminder+7.")
    kind: Literal["reminder", "final_notice"]
    due_on: date


class CollectionStarted(CollectionEvent):
    """An issued invoice's collection started, with its schedule of actions."""

    type: Literal["collection.started"]
    amount: Money
    due_date: date
    steps: list[CollectionStep]


class CollectionActionRecorded(CollectionEvent):
    """A reminder or final notice of a collection was sent."""

    type: Literal["collection.action_recorded"]
    step: str
    kind: Literal["reminder", "final_notice"]
    due_on: date
    recorded_on: date


class CollectionPaymentNoted(CollectionEvent):
    """A payment on the invoice was noted on its collection (after its payment.applied).

    A collection starts with the payments applied to the invoice before it, as far as the
    collections process had read the log; a payment applied before the start that it reads
    only afterwards (when it catches up over many events) is noted here, so the latest
    collection message of an invoice always states what it still owes. A payment after
    collection.ended is noted too (what the invoice then holds for the customer)."""

    type: Literal["collection.payment_noted"]
    payment_id: str = Field(description="The id of the payment.received message.")
    amount: Money
    received_at: datetime


class CollectionRefundNoted(CollectionEvent):
    """A refund on the invoice was noted on its collection (after its refund.applied): money
    paid back of what was paid beyond the invoice, so it comes after collection.ended."""

    type: Literal["collection.refund_noted"]
    refund_id: str = Field(description="The id of the refund.paid message.")
    amount: Money
    paid_at: datetime


class CollectionEnded(CollectionEvent):
    """A collection ended: the invoice was paid."""

    type: Literal["collection.ended"]
    reason: str
    payment_id: str
    received_at: datetime


InvoiceMessage = Annotated[
    InvoiceIssued
    | CreditNoteIssued
    | PaymentApplied
    | RefundApplied
    | CollectionStarted
    | CollectionPaymentNoted
    | CollectionRefundNoted
    | CollectionActionRecorded
    | CollectionEnded,
    Field(discriminator="type"),
]
"""Any message on billing.invoices, told apart by its "type"."""

_INVOICE_MESSAGE: TypeAdapter[InvoiceMessage] = TypeAdapter(InvoiceMessage)


def parse_invoice_message(raw: bytes | str) -> InvoiceMessage:
    """A message read back from billing.invoices (ValidationError if it is not one)."""
    return _INVOICE_MESSAGE.validate_json(raw)


class DeadLetter(OutboundMessage):
    """Input that was rejected, with where it came from and why; `raw` holds its bytes."""

    type: Literal["deadletter"]
    source_topic: str
    source_partition: int
    source_offset: int = Field(description="Dedupe on (source_topic, source_partition, "
                               "source_offset): the topic is at least once.")
    message_id: str | None = Field(description="The message's id, when it could be read.")
    reason: str = Field(description="Why it was rejected and what to do about it.")
    raw: str = Field(description="The original bytes: as text when they are UTF-8, "
                     "else base64 (see raw_encoding); only their beginning where "
                     "raw_truncated.")
    raw_encoding: Literal["utf-8", "base64"]
    # New in this version, so optional: messages sent before it lack them.
    raw_size: int | None = Field(default=None, description="The original value's size in bytes.")
    raw_truncated: bool = Field(default=False, description="raw holds only the beginning of the "
                                "original bytes (none of them when it is empty): the whole "
                                "would not fit the dead-letter topic. billcycle deadletters "
                                "keeps them in full; raw_note says how much was kept.")
    raw_note: str | None = Field(default=None, description="Where raw_truncated: how much of the "
                                 "original bytes raw holds, and where they are kept in full.")


def event_id(originator_id: object, version: int) -> str:
    return f"{originator_id}:{version}"


def invoice_issued(
    invoice: Invoice, log_position: int, occurred_at: datetime, timezone: str
) -> InvoiceIssued | CreditNoteIssued:
    """The message announcing a freshly issued invoice (the aggregate at version 1), with its
    contract's `timezone`."""
    head = _head(invoice, log_position, occurred_at)
    view = {**invoice_view(invoice), **head, "timezone": timezone}
    if invoice.document_type == "credit_note":
        return CreditNoteIssued.model_validate({**view, "type": "credit_note.issued"})
    return InvoiceIssued.model_validate({**view, "type": "invoice.issued"})


def cash_message(invoice: Invoice, event: Any, log_position: int, timezone: str
                 ) -> PaymentApplied | RefundApplied:
    """The message for a payment or a refund, from the document as it stands just after it,
    dated and split between the receivable and customer credit as the ledger posts it in the
    contract's `timezone` (domain/ledger.py: posting_day, reapplied_by)."""
    cur = invoice.currency
    head = {
        **_head(invoice, log_position, event.timestamp),
        "invoice_id": str(invoice.id),
        "number": invoice.number,
        "contract_id": invoice.contract_id,
        "customer_id": invoice.customer_id,
        "currency": cur,
        "balance": _money(invoice.balance, cur),
    }
    if type(event).__name__ == "RefundPaid":
        rid = event.refund_id
        part, rest, others = _split(max(-invoice.total, ZERO),
                                    invoice.refunds_as_posted(timezone), rid, cur)
        return RefundApplied(
            type="refund.applied", **head, refund_id=rid, amount=part + rest,
            paid_at=event.paid_at,
            posted_on=posting_day(event.paid_at, timezone, invoice.issue_date),
            from_receivable=part, from_customer_credit=rest,
            reapplied=[RefundReapplied(refund_id=r.payment_id, posted_on=r.day,
                                       from_receivable=p, from_customer_credit=q)
                       for r, p, q in others],
            refunded=_money(invoice.refunded, cur))
    pid = event.payment_id
    part, rest, others = _split(invoice.total, invoice.payments_as_posted(timezone), pid, cur)
    return PaymentApplied(
        type="payment.applied", **head, payment_id=pid, amount=part + rest,
        received_at=event.received_at,
        posted_on=posting_day(event.received_at, timezone, invoice.issue_date),
        to_receivable=part, to_customer_credit=rest,
        reapplied=[PaymentReapplied(payment_id=c.payment_id, posted_on=c.day,
                                    to_receivable=p, to_customer_credit=q)
                   for c, p, q in others],
        paid=_money(invoice.paid, cur))


def _split(total: Decimal, cash: list[DocumentPayment], cash_id: str, currency: str
           ) -> tuple[Decimal, Decimal, list[tuple[DocumentPayment, Decimal, Decimal]]]:
    """`cash_id`'s part settling `total` and its rest (customer credit), as the ledger posts
    them (domain/ledger.py: reapplied_by), and the same of each other payment or refund whose
    parts it changed."""
    parts, changed = reapplied_by(total, cash, cash_id)

    def split(item: DocumentPayment) -> tuple[Decimal, Decimal]:
        part = _money(parts[item.payment_id], currency)
        return part, _money(item.amount, currency) - part

    this = next(c for c in cash if c.payment_id == cash_id)
    return (*split(this), [(c, *split(c)) for c in changed])


def collection_message(
    collection: Collection, event: Any, log_position: int
) -> (CollectionStarted | CollectionPaymentNoted | CollectionRefundNoted
      | CollectionActionRecorded | CollectionEnded):
    """The message for a collection event, from the collection as it stands just after it."""
    cur = collection.currency
    head = {
        **_head(collection, log_position, event.timestamp),
        "invoice_number": collection.invoice_number,
        "customer_id": collection.customer_id,
        "contract_id": collection.contract_id,
        "currency": cur,
        "outstanding": _money(collection.outstanding, cur),
    }
    kind = type(event).__name__
    if kind == "Started":
        return CollectionStarted.model_validate({
            "type": "collection.started", **head, "amount": _money(collection.amount, cur),
            "due_date": collection.due_date, "steps": collection.steps})
    if kind == "PaymentNoted":
        return CollectionPaymentNoted(
            type="collection.payment_noted", **head, payment_id=event.payment_id,
            amount=_money(event.amount, cur), received_at=event.received_at)
    if kind == "RefundNoted":
        return CollectionRefundNoted(
            type="collection.refund_noted", **head, refund_id=event.refund_id,
            amount=_money(event.amount, cur), paid_at=event.paid_at)
    if kind == "ActionRecorded":
        return CollectionActionRecorded(
            type="collection.action_recorded", **head, step=event.step, kind=event.kind,
            due_on=event.due_on, recorded_on=event.recorded_on)
    if kind == "Ended":
        return CollectionEnded(type="collection.ended", **head, reason=event.reason,
                               payment_id=event.payment_id, received_at=event.received_at)
    raise TypeError(f"no outbound message for Collection.{kind}")


def _money(amount: Decimal, currency: str) -> Decimal:
    """An amount with exactly the currency's minor units, whatever notation the producer
    wrote it in ("600" USD is relayed as "600.00", "50000.0" JPY as "50000")."""
    return Decimal(format_money(amount, currency))


def _head(aggregate: Aggregate, log_position: int, occurred_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id(aggregate.id, aggregate.version),
        "log_position": log_position,
        "occurred_at": occurred_at,
    }


def dead_letter(entry: dict[str, Any]) -> DeadLetter:
    """The message for a dead letter as the store keeps it (domain.application's record)."""
    source, at = entry["source"], entry["at"]
    topic, _, partition = source.removeprefix(KAFKA_SOURCE_PREFIX).rpartition("/")
    return DeadLetter(
        type="deadletter",
        source_topic=topic,
        source_partition=int(partition),
        source_offset=int(at.removeprefix(OFFSET_PREFIX)),
        message_id=entry["message_id"],
        reason=entry["reason"],
        raw=entry["raw"],
        raw_encoding=entry["raw_encoding"],
        raw_size=_raw_bytes(entry["raw"], entry["raw_encoding"]),
    )


# The smallest room `fitted` keeps a dead letter within: its envelope with the reason and the
# id cut to these lengths (6 bytes a character at worst, escaped) and a topic name of 249.
FITS_FROM = 16 * 1024
REASON_KEPT = 1000
ID_KEPT = 256


def fitted(letter: DeadLetter, room: int) -> DeadLetter:
    """The letter as JSON of at most `room` (>= FITS_FROM) bytes: whole where it fits, else
    with raw cut to its longest beginning that fits, marked (raw_truncated, raw_note).

    A dead letter wraps the record, escaped or in base64, so it can be larger than the record
    was, and larger than the dead-letter topic takes: sent whole, it was refused for ever and
    its partition stopped (QA15 H1). The store keeps the record in full.
    """
    if _size(letter) <= room:
        return letter
    base = _envelope(letter, room)
    # Base64 is cut at a multiple of 4 characters, text anywhere: either way a prefix of the
    # original bytes. Each character takes a byte at least, so at most `room` are kept.
    step = 4 if letter.raw_encoding == "base64" else 1
    low, high = 0, min(len(letter.raw), room) // step
    while low < high:  # the longest that fits: the size grows with the prefix
        middle = (low + high + 1) // 2
        if _size(_kept(base, letter.raw[:middle * step])) <= room:
            low = middle
        else:
            high = middle - 1
    return _kept(base, letter.raw[:low * step])


def stripped(letter: DeadLetter) -> DeadLetter:
    """The letter without raw, for a topic that refused it as too large even when cut to the
    room given to `fitted`."""
    return _kept(_envelope(letter, FITS_FROM), "", refused=True)


def _envelope(letter: DeadLetter, room: int) -> DeadLetter:
    """The letter without raw, marked; reason and id cut where they alone would not fit (an
    id of a rejected message can be of any length)."""
    base = _kept(letter.model_copy(update={"raw_size": letter.raw_size or _raw_bytes(
        letter.raw, letter.raw_encoding)}), "")
    if _size(base) <= room // 2:
        return base
    return base.model_copy(update={"reason": _cut(letter.reason, REASON_KEPT),
                                   "message_id": letter.message_id and _cut(letter.message_id,
                                                                            ID_KEPT)})


def _kept(letter: DeadLetter, raw: str, refused: bool = False) -> DeadLetter:
    """The letter with `raw` (a beginning of its raw) and the note saying how much it holds."""
    size = letter.raw_size or 0
    held = (f"raw holds none of the record's {size:,} bytes: the dead-letter topic refused "
            "the message as too large with raw cut to fit the consumer's "
            "--deadletter-max-bytes (the topic's max.message.bytes is lower)" if refused
            else f"raw holds the first {_raw_bytes(raw, letter.raw_encoding):,} of the "
            f"record's {size:,} bytes, as much as fits the dead-letter topic")
    note = (f"{held}; billcycle deadletters --json has them all (source "
            f"{KAFKA_SOURCE_PREFIX}{letter.source_topic}/{letter.source_partition}, "
            f"{OFFSET_PREFIX}{letter.source_offset})")
    return letter.model_copy(update={"raw": raw, "raw_truncated": True, "raw_note": note})


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else f"{text[:length - 3]}..."


def _size(letter: DeadLetter) -> int:
    return len(letter.model_dump_json().encode())


def _raw_bytes(raw: str, encoding: str) -> int:
    """How many of the original bytes `raw` holds."""
    if encoding != "base64":
        return len(raw.encode())
    return len(raw) // 4 * 3 - len(raw) + len(raw.rstrip("="))
