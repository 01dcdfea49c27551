"""A usage message's command without pydantic's machinery, for the messages written the common
way; every other message (and every invalid one) goes through the models as before.

Nearly every inbound message is usage, and nearly all of them are plain: the eight known
fields, strings where strings belong, a quantity in plain notation, a UTC timestamp, scalar
properties. For those, `usage_command` checks each field as the models do and builds the same
`RecordUsage` that `to_command(parse_message(raw))` gives, at about a third of the cost. It
answers None for anything else, and the caller then runs the models: they stay the schema and
the only source of error messages. tests/unit/test_usage_fast.py checks with generated
messages that whatever this accepts, the models accept with the same command, and that
whatever the models reject, this does not accept.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pydantic_core import from_json

from consumers.messages.fields import MAX_NAME_BYTES, name_too_long, utc_timestamp
from consumers.messages.parse import canonical_properties, fingerprint_of, usage_canonical
from domain.commands import RecordUsage
from domain.money import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS
from domain.reasons import CONTROL

# The known fields of Usage (Envelope's and its own); any other field is kept as an extra by
# the model and changes the fingerprint: the model's way.
_FIELDS = frozenset(
    ("type", "id", "occurred_at", "customer_id", "metric", "quantity", "properties",
     "contract_id")
)
# NonNegativeDecimal's plain notation without the sign, in range (domain/money.py) however it
# is written: "-0", negatives and longer spellings ("0012.50") go the long way.
_PLAIN_UNSIGNED = re.compile(
    rf"[0-9]{{1,{MAX_INTEGER_DIGITS}}}(?:\.[0-9]{{1,{MAX_FRACTION_DIGITS}}})?"
)
# Property values taken as they are: the JSON scalars whose Python values compare equal to
# themselves (floats do not all: NaN) and need no checking.
_SCALARS = (str, int, bool, type(None))
_ABSENT: Any = object()


def usage_command(raw: bytes | str) -> RecordUsage | None:
    """The command of a plainly written, valid usage message; None for anything else."""
    try:
        # pydantic-core's own JSON parser, so the values are those validate_json reads
        # (duplicate keys, escapes, big numbers, invalid UTF-8 alike). Only keys go through
        # its string cache: values (ids, times) are new in nearly every message and would
        # only churn it (2.3 us a message against 4 to 4.7).
        data: Any = from_json(raw, cache_strings="keys")
    except ValueError:
        return None
    if type(data) is not dict or data.get("type") != "usage" or not _FIELDS.issuperset(data):
        return None
    message_id = data.get("id")
    customer_id = data.get("customer_id")
    metric = data.get("metric")
    quantity_text = data.get("quantity")
    occurred_at_text = data.get("occurred_at")
    if (
        type(message_id) is not str or not message_id
        or type(customer_id) is not str or not customer_id
        or type(metric) is not str or not metric
        or type(quantity_text) is not str or _PLAIN_UNSIGNED.fullmatch(quantity_text) is None
        or type(occurred_at_text) is not str
    ):
        return None
    contract_id = data.get("contract_id")
    if contract_id is not None and (type(contract_id) is not str or not contract_id):
        return None
    # Only an escape ("\u0000", "\n", ...), a DEL written as itself (JSON allows it unescaped,
    # unlike U+0000..U+001F) or a C1 control's UTF-8 (lead byte 0xC2, shared with the rest of
    # U+0080..U+00BF) can put a control character in a string, which ids and names may not
    # hold (fields.Name): the models' way says so. Plainly written messages have none, and
    # the check costs them a few scans of the bytes.
    if (b"\\" in raw or b"\xc2" in raw or b"\x7f" in raw if isinstance(raw, bytes)
            else "\\" in raw or CONTROL.search(raw)) and any(
            CONTROL.search(name) for name in (message_id, customer_id, metric, contract_id or "")):
        return None
    if len(raw) > MAX_NAME_BYTES // 4 and any(
            name_too_long(name) for name in (message_id, customer_id, metric, contract_id or "")):
        return None  # too long for a name: the models' way says so
    properties = data.get("properties", _ABSENT)
    if properties is _ABSENT:
        properties = {}
    elif type(properties) is not dict or not all(
        type(value) in _SCALARS for value in properties.values()
    ):
        return None
    # No key written twice (the parser keeps the last value; the models refuse it): every ':'
    # of the text ends one of the keys read, written '":', or is in occurred_at. Any other
    # (in an id or a property, after a space) goes the models' way, as a key written twice.
    text = raw if isinstance(raw, bytes) else raw.encode()
    key_colons = text.count(b'":')
    if (key_colons != len(data) + len(properties)
            or text.count(b":") != key_colons + occurred_at_text.count(":")):
        return None
    at = utc_timestamp(occurred_at_text)
    if at is None:
        return None
    occurred_at, occurred_at_iso = at
    quantity = Decimal(quantity_text)
    properties_json = canonical_properties(properties)
    canonical = usage_canonical(
        message_id, customer_id, metric, contract_id, occurred_at_iso, properties_json, quantity
    )
    return RecordUsage.of(
        message_id, fingerprint_of(canonical), occurred_at, customer_id, metric, quantity,
        properties, properties_json, contract_id, occurred_at_iso,
    )

