"""The stored events' JSON, decoded faster and into the same objects as the library's transcoder.

The library's `JSONTranscoder` decodes with `json` and an object hook that turns every
`{"_type_": name, "_data_": value}` dict into its type (dates, Decimals, timestamps, UUIDs).
A replay decodes every invoice, contract and collection event of the log, and the standard
library's parser is most of that time. This transcoder parses with pydantic-core's parser
(jiter, in Rust: about twice as fast on these events, and already a dependency through
pydantic) and converts the typed values where the events keep them: the event's own
attributes and one level inside them (an invoice's subtotals).

It gives exactly the library's objects, or defers to the library's decoding:

- `"_type_"` (quotes included) occurs in the stored text only as a dict key or a string equal
  to `_type_` (a quote inside a string is escaped), so when the conversions made here are as
  many as its occurrences, no dict was left that the object hook would have converted, and
  the ones converted here would have been converted by it, the same way;
- text with a `\\u` escape (never written by the library's encoder for these keys, but a key
  spelled with escapes would hide from the count) and anything pydantic-core refuses go to the
  library, which decodes or raises as it always did.

tests/unit/test_transcoding.py checks it against the library's transcoder.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import JSONTranscoder
from pydantic_core import from_json

_TYPE_KEY = b'"_type_"'
_ESCAPE = b"\\u"


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder with a faster decode for the usual stored event."""

    def decode(self, data: bytes) -> Any:
        if _ESCAPE in data:
            return super().decode(data)
        try:
            obj = from_json(data)
        except ValueError:
            return super().decode(data)
        typed = data.count(_TYPE_KEY)
        if typed == 0:
            return obj
        try:
            if type(obj) is dict and self._convert(obj) == typed:
                return obj
        except Exception:  # the library decodes again and raises its own error
            pass
        return super().decode(data)

    def _convert(self, obj: dict[str, Any]) -> int:
        """Typed values among `obj`'s values and their values, converted in place; how many
        (fewer than were written when some are deeper: the caller then defers). Raises for
        an unknown type or bad data: the caller defers, and the library raises its error."""
        converted = 0
        names = self.names
        for key, value in obj.items():
            if type(value) is not dict:
                continue
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                obj[key] = names[value["_type_"]].decode(value["_data_"])
                converted += 1
                continue
            for inner_key, inner in value.items():
                if type(inner) is dict and len(inner) == 2 and "_type_" in inner \
                        and "_data_" in inner:
                    value[inner_key] = names[inner["_type_"]].decode(inner["_data_"])
                    converted += 1
        return converted
