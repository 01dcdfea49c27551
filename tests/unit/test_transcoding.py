"""The faster event encoding gives exactly the library transcoder's bytes, and the faster
decoding exactly its objects; or either gives its error."""

from __future__ import annotations

import io
from contextlib import closing
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication, DateAsISO
from domain.billed import BilledState, Segment, UsageBilled
from domain.billing_runs import BillingRuns
from domain.invoice import Invoice
from domain.invoice_lines import InvoiceLine, LineKind, subtotals
from domain.transcoding import FastJSONTranscoder, JSONRecords
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
            # Written by the fast encoder: exactly what the library's would have written.
            assert LIBRARY.encode(LIBRARY.decode(n.state)) == n.state
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


# --- encoding ------------------------------------------------------------------------------

characters = st.characters(exclude_categories=["Cs"])  # no lone surrogates: tested apart
text = st.text(characters, max_size=12)
keys = st.one_of(text, st.sampled_from(["_type_", "_data_", "timestamp", "lines"]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), text,
    st.dates(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])),
    st.decimals(allow_nan=False, places=None), st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.builds(lambda t, d: {"_type_": t, "_data_": d},
                  st.sampled_from(["date_iso", "decimal_str", "nope"]), inner),
    ),
    max_leaves=12,
)
states = st.dictionaries(keys, values, max_size=8)


def _same_encoding(state: dict[str, Any]) -> bytes | None:
    try:
        expected = LIBRARY.encode(state)
    except Exception as exc:  # the fast one must refuse it the same way
        with pytest.raises(type(exc)):
            FAST.encode(state)
        return None
    assert FAST.encode(state) == expected
    return expected


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(states)
def test_any_state_is_encoded_to_the_same_bytes(state: dict[str, Any]) -> None:
    stored = _same_encoding(state)
    if stored is not None:
        decoded_alike(stored)


def test_a_lone_surrogate_is_refused_as_the_library_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        FAST.encode({"a": "\ud800"})


# --- the billing run's own events ------------------------------------------------------------

money = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=2)
days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
basis_values = st.one_of(text, st.integers(min_value=-(2**40), max_value=2**40), st.booleans(),
                         st.lists(text, max_size=3))
lines = st.builds(
    InvoiceLine,
    component_id=text, kind=st.sampled_from(list(LineKind)),
    description=st.text(characters, max_size=80),
    quantity=st.decimals(allow_nan=False, allow_infinity=False, places=3,
                         min_value=-10**6, max_value=10**6),
    amount=money, period_start=days, period_end=days,
    unit_amount=st.one_of(st.none(), money),
    basis=st.dictionaries(text, basis_values, max_size=8),
)


def _mappers() -> tuple[Mapper[UUID], Mapper[UUID]]:
    return Mapper(LIBRARY), Mapper(FAST)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, min_size=1, max_size=12), st.sampled_from(["USD", "JPY", "KWD"]), days,
       st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=50))
def test_an_invoice_issued_is_stored_as_the_library_stores_it(
    issued_lines: list[InvoiceLine], currency: str, cycle: date, sequence: int, version: int
) -> None:
    total = sum((line.amount for line in issued_lines), Decimal(0))
    event = Invoice.issued(
        number=f"INV-{sequence:06d}", batch_id="B-20261201-0a1b2c3d", cycle_date=cycle,
        contract_id="ct_1", customer_id="cus_1", currency=currency, issue_date=cycle,
        due_date=cycle + timedelta(days=30),
        document_type="credit_note" if total < 0 else "invoice",
        lines=JSONRecords(line.to_record() for line in issued_lines),
        subtotals=subtotals(issued_lines), total=total, contract_version=version,
    )
    library, fast = _mappers()
    stored = fast.to_stored_event(event)
    assert stored == library.to_stored_event(event)
    assert same(vars(fast.to_domain_event(stored)), vars(library.to_domain_event(stored)))


@settings(max_examples=200)
@given(st.dictionaries(st.tuples(text, days), st.lists(
    st.builds(Segment, days, days, money, money), min_size=1, max_size=3), max_size=3),
    st.dictionaries(st.tuples(text, days), st.builds(UsageBilled, money, money, days,
                                                      st.booleans(), text), max_size=3),
    st.dictionaries(text, money, max_size=3), st.integers(min_value=0, max_value=2**40))
def test_a_contract_invoiced_is_stored_as_the_library_stores_it(
    subscriptions: dict[tuple[str, date], list[Segment]],
    usage: dict[tuple[str, date], UsageBilled],
    milestones: dict[str, Decimal],
    revision: int,
) -> None:
    settlement = BilledState(
        subscriptions={k: tuple(v) for k, v in subscriptions.items()}, usage=usage,
        milestones=milestones, usage_revision=revision)
    state = {  # a Contract.Invoiced event's state, as the mapper hands it to the transcoder
        "timestamp": datetime(2026, 12, 1, 3, 4, 5, 678901, tzinfo=UTC),
        "invoice_id": UUID(int=revision), "number": "INV-000001",
        "batch_id": "B-20261201-0a1b2c3d", "settlement": settlement.to_record(),
    }
    stored = _same_encoding(state)
    assert stored is not None
    decoded_alike(stored)
