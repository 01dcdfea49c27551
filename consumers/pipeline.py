"""The one ingest pipeline: raw bytes -> validated message -> domain command -> one transaction.

Files and Kafka both feed `IngestPipeline.process`; only the source of the bytes differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from eventsourcing.persistence import Tracking

from consumers.messages import (
    ContractAmended,
    ContractCreated,
    ContractTerminated,
    Message,
    MessageRejected,
    MilestoneCompleted,
    PaymentReceived,
    RefundPaid,
    Usage,
    UsageWatermark,
    canonical_properties,
    fingerprint,
    parse_message,
    usage_fingerprint,
)
from consumers.messages.usage_fast import usage_command
from consumers.meter_updates import MeterUpdates
from domain.application import BillingApplication, IngestReport
from domain.commands import (
    AmendContract,
    Command,
    CompleteMilestone,
    CreateContract,
    DeclareWatermark,
    Origin,
    PayRefund,
    ReceivePayment,
    RecordUsage,
    Rejected,
    TerminateContract,
)

DEFAULT_BATCH = 2000


def to_command(message: Message) -> Command:
    """The domain command a validated message asks for."""
    if type(message) is Usage:  # nearly every message: no dict of common fields
        properties_json = canonical_properties(message.properties)
        # occurred_at's text once, for the fingerprint and the UsageBatch record.
        occurred_at_iso = message.occurred_at.isoformat()
        return RecordUsage.of(
            message.id, usage_fingerprint(message, properties_json, occurred_at_iso),
            message.occurred_at, message.customer_id, message.metric, message.quantity,
            message.properties, properties_json, message.contract_id, occurred_at_iso,
        )
    head: dict[str, Any] = {
        "message_id": message.id,
        "message_type": message.type,
        "fingerprint": fingerprint(message),
        "occurred_at": message.occurred_at,
    }
    match message:
        case ContractCreated():
            return CreateContract(**head, terms=message.to_terms())
        case ContractAmended():
            return AmendContract(
                **head,
                contract_id=message.contract_id,
                effective_date=message.effective_date,
                components=message.to_components(),
                usage_threshold_amount=message.usage_threshold_amount,
                sets_usage_threshold=message.sets_usage_threshold,
                payment_terms_days=message.payment_terms_days,
            )
        case ContractTerminated():
            return TerminateContract(
                **head, contract_id=message.contract_id, end_date=message.end_date
            )
        case MilestoneCompleted():
            return CompleteMilestone(
                **head,
                contract_id=message.contract_id,
                milestone=message.milestone,
                completed_on=message.completed_on,
            )
        case UsageWatermark():
            return DeclareWatermark(
                **head,
                metric=message.metric,
                complete_through=message.complete_through,
                source=message.source or "",
            )
        case PaymentReceived():
            return ReceivePayment(
                **head,
                invoice_number=message.invoice_number,
                amount=message.amount,
                currency=message.currency,
            )
        case RefundPaid():
            return PayRefund(
                **head,
                invoice_number=message.invoice_number,
                amount=message.amount,
                currency=message.currency,
            )
    raise TypeError(f"no command for message type {message.type}")


class IngestPipeline:
    """Validate, dedupe and apply messages; rejected ones become dead letters, never blockers."""

    def __init__(self, app: BillingApplication) -> None:
        self.app = app

    def process(self, batch: Iterable[Origin], tracking: Tracking | None = None) -> IngestReport:
        """Apply one batch in one transaction (with its source position when given)."""
        return self.apply(parse(batch), tracking)

    def apply(self, parsed: Parsed, tracking: Tracking | None = None) -> IngestReport:
        """Apply a parsed batch in one transaction (with its source position when given)."""
        return self.app.ingest(parsed.commands, parsed.rejected, tracking)

    def process_lines(
        self, stream: BinaryIO, source: str, batch_size: int = DEFAULT_BATCH
    ) -> IngestReport:
        """Ingest a JSON Lines stream: one message per non-blank line, in batches. The meters
        are up to date with it when this returns."""
        total = IngestReport()
        meters = MeterUpdates(self.app)
        try:
            for batch in _batches(_lines(stream, source), batch_size):
                total.add(self.process(batch))
                meters.after_batch()
        except BaseException:
            meters.stop()
            raise
        meters.finish()
        return total


@dataclass(frozen=True)
class Parsed:
    """A batch validated and turned into commands; rejected input with its reasons."""

    commands: list[tuple[Command, Origin]]
    rejected: list[Rejected]


def parse(batch: Iterable[Origin]) -> Parsed:
    """Validate a batch (no database: this can run while another batch is being written)."""
    commands: list[tuple[Command, Origin]] = []
    rejected: list[Rejected] = []
    for origin in batch:
        # Plain usage messages (nearly all) without pydantic; anything else through the models.
        command = usage_command(origin.raw)
        if command is not None:
            commands.append((command, origin))
            continue
        try:
            commands.append((to_command(parse_message(origin.raw)), origin))
        except MessageRejected as exc:
            rejected.append(Rejected(origin, exc.reason, exc.message_id))
        except Exception as exc:  # a validator's own failure
            # Dead-lettered with its bytes, not raised: raised, it would stop ingest at this
            # message on every restart, and every valid message behind it with it.
            rejected.append(Rejected(origin, (
                f"billcycle could not validate this message ({type(exc).__name__}: {exc}); "
                "that is a billcycle bug: report it with this dead letter, and send the message "
                "again once fixed")))
    return Parsed(commands, rejected)


def _lines(stream: BinaryIO, source: str) -> Iterator[Origin]:
    for number, line in enumerate(stream, start=1):
        raw = line.rstrip(b"\r\n")
        if number == 1:  # a UTF-8 byte order mark (editors on Windows write one) is no content
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        if raw.strip():
            yield Origin(source, f"line {number}", raw)


def _batches(origins: Iterator[Origin], size: int) -> Iterator[list[Origin]]:
    batch: list[Origin] = []
    for origin in origins:
        batch.append(origin)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
