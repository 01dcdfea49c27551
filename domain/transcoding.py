"""The stored events' JSON, written and read faster, byte for byte and object for object the
library transcoder's.

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

Encoding is the largest single cost of a billing run's writes (an `InvoiceIssued` of ten
lines is about 2.7 kB): the library's C encoder escapes and joins each string one at a time.
Its per-object hook for dates, Decimals and timestamps is not what costs (about 3% of it). Here
the typed values are wrapped where the events keep them (the same two levels) and
pydantic-core writes the text. Both encoders write compact JSON, non-ASCII as UTF-8, the same
escapes and integers of any size; they differ on floats (`1e-05` against `0.00001`) and may on
subclasses of the plain types, so a state holding any of those, or a typed value deeper down,
is encoded by the library.

tests/unit/test_transcoding.py checks both directions against the library's transcoder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import JSONTranscoder
from pydantic_core import from_json, to_json

_TYPE_KEY = b'"_type_"'
_ESCAPE = b"\\u"
_SCALARS = frozenset({str, int, bool, type(None)})


def encode_with(encoder: json.JSONEncoder) -> Callable[[Any], str]:
    """`encoder.encode`, with the C encoder it would make on every call made once.

    `JSONEncoder.encode` makes its C encoder anew per call (with a dict of the objects seen,
    against cycles, and a closure for floats): for a small value, half of the time. This makes
    the same C encoder, from the encoder's own options and with json.encoder's own arguments,
    once, without the check for cycles, so it is only for values that cannot hold themselves
    (values decoded from JSON, rows built of plain values). The same text; `encoder.encode`
    itself where json would not use the C encoder (no C speedups, or an indent).
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None or encoder.indent is not None:
        return encoder.encode
    strings: Any = (
        json.encoder.encode_basestring_ascii if encoder.ensure_ascii
        else json.encoder.encode_basestring
    )
    made = make(None, encoder.default, strings, encoder.indent, encoder.key_separator,
                encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)

    def encode(value: Any) -> str:
        if type(value) is str:  # encode()'s own shortcut
            return encoder.encode(value)
        return "".join(made(value, 0))

    return encode


class JSONRecords(list[Any]):
    """Records that are JSON-native by their types: str, int, bool, None, and lists, tuples and
    dicts of those, never a float, a Decimal or a date. Made where the types say so (invoice
    lines' `to_record`, usage records), so that encoding need not walk every value to know
    it."""


def _plain(value: Any) -> bool:
    """Whether `value` is JSON-native all the way down in the types both encoders write alike.

    Exact types only: a subclass (an enum, a bool-like int) may be written differently. A loop
    rather than a recursion: this walks every value of every invoice line.
    """
    if type(value) is JSONRecords:
        return True
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            for key, inner in item.items():
                if type(key) is not str:
                    return False
                if type(inner) not in _SCALARS:
                    pending.append(inner)
        elif kind is list or kind is tuple:
            pending.extend(item)
        else:
            return False
    return True


class FastJSONTranscoder(JSONTranscoder):
    """The library's JSON transcoder, written and read faster for the usual stored event."""

    # --- encoding -----------------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict:
            wrapped = self._wrapped(obj, deeper=True)
            if wrapped is not None:
                try:
                    return to_json(wrapped)
                except ValueError:  # e.g. a lone surrogate: the library says what is wrong
                    pass
        return super().encode(obj)

    def _wrapped(self, values: dict[Any, Any], deeper: bool) -> dict[str, Any] | None:
        """`values` with each transcoded value wrapped as the library's hook would, or None if
        the two encoders might write them differently."""
        types = self.types
        out: dict[str, Any] = {}
        for key, value in values.items():
            if type(key) is not str:
                return None
            kind = type(value)
            if kind in _SCALARS:
                out[key] = value
                continue
            transcoding = types.get(kind)  # the exact type, as the library's hook
            if transcoding is not None:
                data = transcoding.encode(value)
                if type(data) is not str and not _plain(data):
                    return None
                value = {"_type_": transcoding.name, "_data_": data}
            elif deeper and kind is dict:
                value = self._wrapped(value, deeper=False)
                if value is None:
                    return None
            elif not _plain(value):
                return None
            out[key] = value
        return out

    # --- decoding -----------------------------------------------------------------------------

    def decode(self, data: bytes) -> Any:
        if _ESCAPE in data:
            return super().decode(data)
        try:
            # Keys only through pydantic-core's string cache: most values are new (a usage
            # batch decodes about a quarter faster than with every string cached).
            obj = from_json(data, cache_strings="keys")
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
