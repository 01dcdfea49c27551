"""The faster event decoding gives exactly the library transcoder's objects, or its error."""

from __future__ import annotations

import io
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication, DateAsISO
from domain.billing_runs import BillingRuns
from domain.transcoding import FastJSONTranscoder
from infra import sample_book
from infra.store.url import store_env


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = registered(JSONTranscoder())
FAST = registered(FastJSONTranscoder())


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (Decimal("1.0") is not Decimal("1.00"))."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | Decimal | datetime):
        return repr(a) == repr(b)
    return bool(a == b)


def decoded_alike(data: bytes) -> None:
    try:
        expected = LIBRARY.decode(data)
    except Exception as exc:  # the same error is expected
        with pytest.raises(type(exc)):
            FAST.decode(data)
        return
    assert same(FAST.decode(data), expected), data


def test_every_event_of_a_billed_book_decodes_to_the_same_objects() -> None:
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as app:
        assert isinstance(app.mapper.transcoder, FastJSONTranscoder)
        lines = b"".join(sample_book.generate(contracts=30))
        IngestPipeline(app).process_lines(io.BytesIO(lines), "test")
        at = datetime(2026, 12, 1, 2, tzinfo=UTC)
        BillingRuns(app, lambda: at).run(date(2026, 12, 1))
        topics: set[str] = set()
        for n in app.recorder.select_notifications(start=None, limit=1_000_000):
            topics.add(n.topic)
            decoded_alike(n.state)
        assert {t.rsplit(".", 1)[-1] for t in topics} >= {
            "Created", "InvoiceIssued", "Started", "OutcomesRecorded", "Finished"}


TYPED = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.dates(),
    st.datetimes(timezones=st.just(UTC)),
    st.uuids(),
)
PLAIN = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
VALUES = st.recursive(PLAIN | TYPED, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), VALUES, max_size=8))
def test_any_encoded_state_decodes_to_the_same_objects(state: dict[str, Any]) -> None:
    decoded_alike(LIBRARY.encode(state))


@pytest.mark.parametrize("text", [
    # Typed values deeper than the fast path looks, and dicts only looking typed.
    '{"a":[{"_type_":"date_iso","_data_":"2026-12-01"}]}',
    '{"a":{"b":{"_type_":"date_iso","_data_":"2026-12-01"}}}',
    '{"a":{"_type_":"decimal_str","_data_":{"_type_":"date_iso","_data_":"2026-12-01"}}}',
    '{"a":{"_type_":"date_iso"},"b":{"_type_":"date_iso","_data_":"2026-12-01"}}',
    '{"a":{"_type_":"date_iso","_data_":"2026-12-01","c":1}}',
    '{"a":"_type_","b":{"_type_":"date_iso","_data_":"2026-12-01"}}',
    '{"_type_":"date_iso","_data_":"2026-12-01"}',
    '[{"_type_":"date_iso","_data_":"2026-12-01"}]',
    '{"a":{"\\u005ftype_":"date_iso","_data_":"2026-12-01"}}',
    '{"a":"\\u00e9\\ud800","b":{"_type_":"decimal_str","_data_":"1.50"}}',
    '{"a":{"_type_":"decimal_str","_data_":"1.50"},"b":NaN,"c":-Infinity}',
    '{"a":1e999,"b":-0,"c":123456789012345678901234567890}',
    # Errors: the library's own.
    '{"a":{"_type_":"no_such_type","_data_":"x"}}',
    '{"a":{"_type_":["list"],"_data_":"x"}}',
    '{"a":{"_type_":"date_iso","_data_":"not a date"}}',
    '{"a":',
    '{"a":1,}',
])
def test_awkward_texts_decode_as_the_library_decodes_them(text: str) -> None:
    decoded_alike(text.encode())


def test_invalid_utf8_is_refused_as_the_library_refuses_it() -> None:
    decoded_alike(b'{"a":"\xff"}')


def test_a_uuid_and_a_timestamp_at_the_top_level_come_back_as_themselves() -> None:
    state = {"id": UUID(int=7), "at": datetime(2026, 12, 1, tzinfo=UTC) + timedelta(hours=1),
             "subtotals": {"usage": Decimal("1.50")}}
    assert same(FAST.decode(LIBRARY.encode(state)), state)
