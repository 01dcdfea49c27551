"""How a reason names what it is about: an error from outside the domain (the store's, a
library's) in one line, an id escaped and cut short."""

from __future__ import annotations

import re


def first_line(error: BaseException) -> str:
    """The error's first non-blank line (PostgreSQL adds DETAIL and CONTEXT lines), or its
    type's name where it says nothing."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()),
                type(error).__name__)


# C0 and C1 control characters and DEL: no id or name holds one (fields.Name).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
SHOWN_ID_LENGTH = 60


def escaped(text: str) -> str:
    """Control characters escaped as JSON writes them: no raw one in a reason or a record."""
    return CONTROL.sub(lambda c: f"\\u{ord(c.group()):04x}", text)


def shown_id(message_id: str) -> str:
    """An id as a reason names it: escaped, and cut to SHOWN_ID_LENGTH characters."""
    text = escaped(message_id)
    return text if len(text) <= SHOWN_ID_LENGTH else f"{text[:SHOWN_ID_LENGTH - 3]}..."
