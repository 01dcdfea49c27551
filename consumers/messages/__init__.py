"""Inbound messages (contract.md §1): the one set of models and the one validation."""

from consumers.messages.errors import MESSAGE_TYPES, MessageRejected
from consumers.messages.models import (
    ContractAmended,
    ContractCreated,
    ContractTerminated,
    Envelope,
    Message,
    MilestoneCompleted,
    PaymentReceived,
    RefundPaid,
    Usage,
    UsageWatermark,
)
from consumers.messages.parse import (
    canonical_properties,
    fingerprint,
    parse_message,
    usage_fingerprint,
)

__all__ = [
    "MESSAGE_TYPES",
    "ContractAmended",
    "ContractCreated",
    "ContractTerminated",
    "Envelope",
    "Message",
    "MessageRejected",
    "MilestoneCompleted",
    "PaymentReceived",
    "RefundPaid",
    "Usage",
    "UsageWatermark",
    "canonical_properties",
    "fingerprint",
    "parse_message",
    "usage_fingerprint",
]
