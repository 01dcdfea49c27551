"""parse_message: bytes in, a validated message out (or MessageRejected); and fingerprint."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from hashlib import sha256
from typing import Any

from pydantic import TypeAdapter, ValidationError

from consumers.messages.errors import MessageRejected, rejection, subject_of
from consumers.messages.models import Message, Usage
from domain.transcoding import encode_with

# One adapter over the tagged union: pydantic-core parses the JSON and dispatches on "type" in
# one pass, with no Python in between; Python runs only for the few custom field checks.
_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(raw: bytes | str) -> Message:
    """The validated message in `raw` (UTF-8 JSON); MessageRejected with a reason if invalid."""
    repeated_key(raw)
    try:
        return _MESSAGE.validate_json(raw)
    except ValidationError as error:
        raise rejection(raw, error) from error


def repeated_key(raw: bytes | str) -> None:
    """MessageRejected if an object in `raw` names a key twice.

    Every JSON parser here keeps the last value silently: "quantity": "1", "quantity": "1000"
    would be billed as 1000. Which one the producer meant is not ours to guess. Anything that
    is not JSON is left to the validation, which says why."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                found.append(key)
            seen.add(key)
        return dict(items)

    try:
        head = json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return
    if found:
        subject, message_id = subject_of(head if isinstance(head, dict) else {})
        raise MessageRejected(
            f'{subject}: the key "{found[0]}" appears more than once in an object; write each '
            "key once (which value was meant cannot be told)", message_id)


def fingerprint(message: Message) -> str:
    """sha256 hex of the message's validated content, extra fields included.

    Equal for the same content however it was written: key order, whitespace, "12.5" or
    "12.50", "Z" or "+00:00", a default left out or spelled out. Different for any other value.
    """
    if type(message) is Usage:
        return usage_fingerprint(message, canonical_properties(message.properties))
    return fingerprint_of(_CANONICAL_JSON.encode(message.model_dump()))


def fingerprint_of(canonical: str) -> str:
    """The fingerprint of a message's canonical text: sha256, hex."""
    return sha256(canonical.encode()).hexdigest()


def usage_fingerprint(message: Usage, properties_json: str, occurred_at_iso: str = "") -> str:
    """`fingerprint(message)`, given `canonical_properties(message.properties)` (and
    `message.occurred_at.isoformat()` if the caller has it)."""
    if message.model_extra:
        canonical = _CANONICAL_JSON.encode(message.model_dump())
    else:
        canonical = usage_canonical(
            message.id, message.customer_id, message.metric, message.contract_id,
            occurred_at_iso or message.occurred_at.isoformat(), properties_json,
            message.quantity,
        )
    return fingerprint_of(canonical)


def usage_canonical(
    message_id: str,
    customer_id: str,
    metric: str,
    contract_id: str | None,
    occurred_at_iso: str,
    properties_json: str,
    quantity: Decimal,
) -> str:
    """`_CANONICAL_JSON.encode(m.model_dump())` of a usage message without extra fields,
    character for character, written out.

    Usage is nearly every message and its fields are fixed: this skips `model_dump` and the
    encoder's Python hook per Decimal and datetime. Keys in sorted order, as sort_keys puts
    them; tests/unit/test_messages.py checks both forms agree.
    """
    return (
        f'{{"contract_id":{_string(contract_id)},"customer_id":{_STRING(customer_id)},'
        f'"id":{_STRING(message_id)},"metric":{_STRING(metric)},'
        f'"occurred_at":"{occurred_at_iso}",'
        f'"properties":{properties_json},'
        f'"quantity":"{format(quantity.normalize(), "f")}","type":"usage"}}'
    )


def canonical_properties(properties: dict[str, Any]) -> str:
    """`_CANONICAL_JSON.encode(properties)`: sorted keys, no spaces, ASCII. Ingest records
    usage properties in this form too."""
    if len(properties) == 1:
        # Nearly every usage message has one property, a string: written out, a third of the
        # encoder's cost; the same text (tests/unit/test_messages.py).
        ((name, value),) = properties.items()
        if type(value) is str:
            return f"{{{_STRING(name)}:{_STRING(value)}}}"
    return _ENCODE_CANONICAL(properties) if properties else "{}"


def _string(value: str | None) -> str:
    return "null" if value is None else _STRING(value)


def _canonical(value: Any) -> str:
    """The JSON form of the values json does not know, the same for the same value."""
    if isinstance(value, Decimal):
        # By value: 12.5 and 12.50 are the same amount; "f" keeps 100 from becoming 1E+2.
        return format(value.normalize(), "f")
    if isinstance(value, datetime | date):  # datetimes are UTC already
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


# Built once: json.dumps with options builds an encoder per call, a third of the cost here.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_canonical)
_STRING = json.encoder.encode_basestring_ascii  # as _CANONICAL_JSON writes a str (C)
# And its C encoder made once (encode() makes it anew per call, two thirds of the cost of a
# message's properties): properties come from JSON text and cannot hold themselves.
_ENCODE_CANONICAL = encode_with(_CANONICAL_JSON)
