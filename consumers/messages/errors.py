"""MessageRejected and the one-line reason made from a failed validation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from consumers.messages.components import ComponentIn, PricingIn
from consumers.messages.fields import shown
from consumers.messages.models import Message
from domain.reasons import escaped, shown_id


class MessageRejected(Exception):
    """An inbound message that cannot be accepted; `reason` says why and what to do."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


def _tags(union: Any, field: str) -> tuple[str, ...]:
    members = get_args(get_args(union)[0])  # Annotated[A | B, Field(...)] -> (A, B)
    return tuple(get_args(member.model_fields[field].annotation)[0] for member in members)


MESSAGE_TYPES = _tags(Message, "type")
_TAGS = {
    "type": MESSAGE_TYPES,
    "kind": _tags(ComponentIn, "kind"),
    "model": _tags(PricingIn, "model"),
}

_OBJECT = "must be a JSON object, not {input}"

# pydantic's own error types, as they read after the field path. Errors raised by billcycle's
# validators are already worded this way and are used as they are.
_PHRASES = {
    "missing": "is missing; add it",
    "string_type": "must be a string, not {input}",
    "string_too_short": "is empty; give a non-empty string",
    "int_type": "must be a whole number such as 30, not {input}",
    "greater_than_equal": "{input} is below {ge}; it must be >= {ge}",
    "less_than_equal": "{input} is above {le}; it must be <= {le}",
    "enum": "{input} is not one of {expected}",
    "literal_error": "{input} is not one of {expected}",
    "dict_type": _OBJECT,
    "model_type": _OBJECT,
    "model_attributes_type": _OBJECT,
    "list_type": "must be a JSON array, not {input}",
}


def rejection(raw: bytes | str, error: ValidationError) -> MessageRejected:
    """The MessageRejected for `raw`, whose validation failed with `error`."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError as bad:
            return MessageRejected(
                f"not UTF-8 (byte 0x{raw[bad.start]:02x} at position {bad.start}); "
                "encode messages as UTF-8"
            )
    if not raw.strip():  # a Kafka record's empty value (a tombstone has its own reason)
        return MessageRejected(
            "empty: the message has no content (an empty value, not a null one); "
            "send one JSON object per message"
        )
    errors = error.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return MessageRejected(
            f"not JSON ({first.get('ctx', {}).get('error', first['msg'])}); "
            "send one JSON object per message (per line in a file)"
        )
    try:
        head = json.loads(raw)
    except ValueError:  # JSON that pydantic-core takes and the json module does not
        head = {}
    if not isinstance(head, dict):
        return MessageRejected(
            f"{shown(head)} is not a message; send one JSON object per message (per line in a file)"
        )
    subject, message_id = subject_of(head)
    return MessageRejected(f"{subject}: {_problems(errors, head)}", message_id)


# Every problem is said, so that a producer fixes them in one go; beyond this many the message
# is likely not the type it says at all, and the rest are counted.
SHOWN_PROBLEMS = 10


def _problems(errors: Sequence[ErrorDetails], head: dict[str, Any]) -> str:
    """One problem as it is; several numbered: "2 problems: (1) ...; (2) ..."."""
    said = [_problem(error, head) for error in errors[:SHOWN_PROBLEMS]]
    if len(said) == 1:
        return said[0]
    listed = "; ".join(f"({n}) {problem}" for n, problem in enumerate(said, 1))
    more = len(errors) - len(said)
    return f"{len(errors)} problems: {listed}" + (f"; and {more} more" if more else "")


def subject_of(head: dict[str, Any]) -> tuple[str, str | None]:
    """How a reason names a message ("usage evt-1", "message"), and its id if it has one."""
    kind, message_id = head.get("type"), _text(head.get("id"))
    subject = kind if kind in MESSAGE_TYPES else "message"
    if not message_id:
        return subject, message_id
    return f"{subject} {shown_id(message_id)}", escaped(message_id)


def _problem(error: ErrorDetails, head: dict[str, Any]) -> str:
    loc, ctx = error["loc"], error.get("ctx", {})
    if not loc and error["type"] == "union_tag_not_found":
        return f'"type" is missing; set it to one of {_listed(MESSAGE_TYPES)}'
    if not loc and error["type"] == "union_tag_invalid":
        if not isinstance(head["type"], str):
            return f'"type" must be a string such as "usage", not {shown(head["type"])}'
        return f'unknown message type "{head["type"]}"; known types: {_listed(MESSAGE_TYPES)}'
    path = _path(loc[1:])  # loc[0] is the message type
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        field = str(ctx["discriminator"]).strip("'")
        given = error["input"].get(field) if isinstance(error["input"], dict) else None
        found = ("is null; use one of" if "tag" in ctx and given is None
                 else f'"{ctx["tag"]}" is not one of' if "tag" in ctx
                 else "is missing; use one of")
        return f"{_join(path, field)} {found} {_listed(_TAGS[field])}"
    if "at" in ctx:  # a rule about how values fit together: "components[2].id: ..."
        return f"{path}{ctx['at']}: {error['msg']}".lstrip(".")
    phrase = _PHRASES.get(error["type"])
    if phrase is None:
        return f"{path} {error['msg']}"
    values = {key: str(value).replace("'", '"') for key, value in ctx.items()}
    return f"{path} {phrase.format(input=shown(error['input']), **values)}"


_TAG = "<tag>"


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    after: int | str = ""
    for part in loc:
        # Tagged unions add the tag to the location: components[1].usage.pricing.graduated...
        if isinstance(part, str) and (
            (isinstance(after, int) and part in _TAGS["kind"])
            or (after == "pricing" and part in _TAGS["model"])
        ):
            after = _TAG  # the next part is a field, even one named like the tag (milestone)
            continue
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
        after = part
    return path


def _join(path: str, field: str) -> str:
    return f"{path}.{field}" if path else field


def _listed(tags: Sequence[str]) -> str:
    return ", ".join(tags)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
