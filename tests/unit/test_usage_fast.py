"""The usage fast path (consumers/messages/usage_fast.py) against the models it stands in for.

For any input, valid or not: whatever `usage_command` accepts, `parse_message` accepts too and
`to_command` gives the same command, field for field (fingerprint, texts and types included);
whatever the models reject, the fast path does not accept (the pipeline then rejects it through
the models, with their error message). And the common way of writing usage is taken fast.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from consumers.messages import MessageRejected, parse_message
from consumers.messages.fields import utc_timestamp
from consumers.messages.usage_fast import usage_command
from consumers.pipeline import parse, to_command
from domain.commands import Origin, RecordUsage

_FIELDS = ("type", "id", "occurred_at", "customer_id", "metric", "quantity", "properties",
           "contract_id")

names = st.one_of(
    st.sampled_from(["evt-1", "cus_1", "api_calls", "c-1", "é", "\u00a0", " x ", ""]),
    st.text(min_size=1, max_size=8),
)
odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.just([]), st.just({}),
    st.just(["x"]), st.just({"a": 1}),
)

_digits = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=6),
    st.text(alphabet="0123456789", min_size=26, max_size=32),  # about the context's 28 digits
)
quantities = st.one_of(
    _digits,
    st.builds(lambda sign, whole, frac: f"{sign}{whole}{frac}",
              st.sampled_from(["", "", "-", "+"]), _digits,
              st.one_of(st.just(""), _digits.map(lambda d: "." + d), st.just("."))),
    st.sampled_from(["0", "-0", "0.0", "00.50", "1e3", "1E3", " 1", "1 ", "NaN", "Infinity",
                     "\u0661", "1_000", "", ".5", "5.", "1.5.5", "99999999999999999999999999999"
                     "9999.123"]),
    st.text(max_size=6),
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Timestamps in many spellings: valid, near-valid and broken."""
    year = draw(st.sampled_from(["2026", "2026", "0999", "9999", "0001", "20261", "\u0662026"]))
    month = draw(st.sampled_from(["01", "11", "02", "12", "13", "00", "1"]))
    day = draw(st.sampled_from(["01", "03", "28", "29", "30", "31", "32"]))
    sep = draw(st.sampled_from(["T", "T", "T", "t", " ", "_"]))
    clock = draw(st.sampled_from(["10:00:00", "00:00:00", "23:59:59", "24:00:00", "10:60:00",
                                  "10:00:60", "10:00", "1000:00"]))
    fraction = draw(st.sampled_from(["", "", ".000000", ".000001", ".5", ".123456",
                                     ".1234567", ".123", ".", ",5"]))
    offset = draw(st.sampled_from(["Z", "Z", "Z", "+00:00", "+00:00", "z", "-00:00", "+01:00",
                                   "+0000", "+00", "", "+24:00", "ZZ", "Z "]))
    return f"{year}-{month}-{day}{sep}{clock}{fraction}{offset}"


common_timestamps = st.builds(
    lambda at, fraction, offset: at.replace(microsecond=0).isoformat() + fraction + offset,
    st.datetimes(timezones=st.none()),
    st.sampled_from(["", ".123456", ".000001", ".000000", ".5"]),
    st.sampled_from(["Z", "+00:00", "+02:00", "-05:30", "z"]),
)

properties = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(
        st.text(max_size=5), st.integers(), st.booleans(), st.none(),
        st.integers(min_value=10**19, max_value=10**30),
    ), max_size=4),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=3), odd_values, max_size=3),
    odd_values,
)


_NINE_IN_TEN = st.sampled_from([True] * 9 + [False])


@st.composite
def messages(draw: st.DrawFn) -> bytes | str:
    """Usage-like JSON: each field present or not, right or wrong, sometimes twice or extra.

    Half of them have every field of the right kind (their values may still be wrong), the
    others have fields left out or replaced by anything, a field in ten.
    """
    sound = draw(st.booleans())

    def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(good) if sound or draw(_NINE_IN_TEN) else draw(bad)

    fields: dict[str, Any] = {
        "type": _mostly(st.just("usage"),
                        st.sampled_from(["Usage", "usage.watermark", None, 1])),
        "id": _mostly(names, odd_values),
        "occurred_at": _mostly(
            st.one_of(common_timestamps, common_timestamps, timestamps()),
            st.one_of(st.text(max_size=4), odd_values),
        ),
        "customer_id": _mostly(names, odd_values),
        "metric": _mostly(names, odd_values),
        "quantity": _mostly(st.one_of(_digits, quantities), odd_values),
        "properties": _mostly(st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                              max_size=3), properties),
        "contract_id": _mostly(st.one_of(st.none(), names), odd_values),
    }
    # Now and then a field left out (properties and contract_id have defaults).
    pairs = [(key, value) for key, value in fields.items() if sound or draw(_NINE_IN_TEN)]
    if not draw(_NINE_IN_TEN):
        pairs.append((draw(st.sampled_from(["extra", "id", "type", "quantity"])),
                      draw(st.one_of(names, odd_values))))
    pairs = draw(st.permutations(pairs))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    ascii_only = draw(st.booleans())
    text = "{" + separators[0].join(
        json.dumps(key, ensure_ascii=ascii_only) + separators[1]
        + json.dumps(value, ensure_ascii=ascii_only, separators=separators)
        for key, value in pairs
    ) + "}"
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return text
    raw = text.encode()
    if kind == 1 and raw:  # a byte changed: invalid UTF-8 or JSON, mostly
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    return raw


def _slow(raw: bytes | str) -> RecordUsage | None:
    try:
        command = to_command(parse_message(raw))
    except MessageRejected:
        return None
    assert isinstance(command, RecordUsage)
    return command


def _exact(command: RecordUsage) -> tuple[Any, ...]:
    """Every field with its type and exact spelling (1 == True, 1.0 == 1.00 otherwise)."""
    fields = tuple(
        (name, type(value).__name__, repr(value), value.utcoffset() if name == "occurred_at"
         else None)
        for name, value in vars(command).items()
    )
    return (*fields, tuple((k, type(v).__name__, repr(v)) for k, v in command.properties.items()))


@settings(max_examples=2000, deadline=None)
@given(messages())
@example(b'{"type":"usage","id":"e","occurred_at":"2026-11-03T10:00:00Z","customer_id":"c",'
         b'"metric":"m","quantity":"-0"}')
@example(b'{"type":"usage","id":"e","occurred_at":"2026-11-03T10:00:00.000000Z",'
         b'"customer_id":"c","metric":"m","quantity":"1"}')
@example(b'{"type":"usage","id":"e","id":"","occurred_at":"2026-11-03T10:00:00Z",'
         b'"customer_id":"c","metric":"m","quantity":"1"}')
@example(b'{"type":"usage","id":"\\ud800","occurred_at":"2026-11-03T10:00:00Z",'
         b'"customer_id":"c","metric":"m","quantity":"1"}')
# A DEL written as itself, which JSON allows in a string (found by this test's search).
@example(b'{"type":"usage","id":"e","occurred_at":"2026-11-03T10:00:00Z",'
         b'"customer_id":"c","metric":"m","quantity":"1","contract_id":"\x7f"}')
def test_the_fast_path_accepts_only_what_the_models_accept_with_the_same_command(
    raw: bytes | str,
) -> None:
    fast = usage_command(raw)
    if fast is None:
        return
    slow = _slow(raw)
    assert slow is not None, "taken fast, rejected by the models"
    assert fast == slow
    assert _exact(fast) == _exact(slow)


def printable_names(max_size: int) -> st.SearchStrategy[str]:
    """Ids and names as fields.Name takes them: no control character (category Cc)."""
    return st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1,
                   max_size=max_size)


@st.composite
def plain_usage(draw: st.DrawFn) -> bytes:
    message: dict[str, Any] = {
        "type": "usage",
        "id": draw(printable_names(12)),
        "occurred_at": draw(st.datetimes(min_value=datetime(1900, 1, 1),
                                         max_value=datetime(2999, 12, 31, 23, 59, 59),
                                         timezones=st.none())).isoformat()
        + draw(st.sampled_from(["Z", "+00:00"])),
        "customer_id": draw(printable_names(8)),
        "metric": draw(printable_names(8)),
        "quantity": draw(st.decimals(min_value=0, max_value=10**9, places=4)).__format__("f"),
    }
    if draw(st.booleans()):
        message["properties"] = draw(st.dictionaries(
            st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers(), st.booleans(),
                                           st.none()), max_size=3))
    if draw(st.booleans()):
        message["contract_id"] = draw(st.one_of(st.none(), printable_names(6)))
    # A ':' right after a quote inside a value reads as one more key to the check for keys
    # written twice: such a message goes the models' way (same command, more slowly).
    texts = [v for k, v in message.items() if k != "occurred_at"] + [
        *message.get("properties", {}), *message.get("properties", {}).values()]
    assume(not any(isinstance(t, str) and ":" in t for t in texts))
    return json.dumps(message, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=500, deadline=None)
@given(plain_usage())
def test_usage_written_the_common_way_is_taken_fast_with_the_models_command(raw: bytes) -> None:
    fast = usage_command(raw)
    assert fast is not None
    assert _exact(fast) == _exact(_slow(raw))  # type: ignore[arg-type]


def test_rejected_usage_gets_the_models_reason_through_the_pipeline() -> None:
    raw = (b'{"type":"usage","id":"evt-1","occurred_at":"2026-11-03T10:00:00Z",'
           b'"customer_id":"c","metric":"m","quantity":"-3"}')
    parsed = parse([Origin("file:x", "line 1", raw)])
    assert parsed.commands == []
    assert [r.reason for r in parsed.rejected] == [
        'usage evt-1: quantity "-3" is negative; it must be >= 0'
    ]


def test_a_message_the_validation_fails_on_is_dead_lettered_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A validator's own failure (a bug) on one message must not stop ingest at it for good.
    import consumers.pipeline

    def broken(raw: bytes | str) -> Any:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(consumers.pipeline, "parse_message", broken)
    good = (b'{"type":"usage","id":"evt-1","occurred_at":"2026-11-03T10:00:00Z",'
            b'"customer_id":"c","metric":"m","quantity":"3"}')
    odd = b'{"type":"usage.watermark","id":"w-1"}'  # not usage: the models' way
    parsed = parse([Origin("file:x", "line 1", odd), Origin("file:x", "line 2", good)])
    assert [o.position for _, o in parsed.commands] == ["line 2"]
    assert [(r.origin.position, r.reason) for r in parsed.rejected] == [(
        "line 1",
        "billcycle could not validate this message (OverflowError: date value out of range); "
        "that is a billcycle bug: report it with this dead letter, and send the message again "
        "once fixed",
    )]


@given(st.sampled_from(["quantity", "customer_id", "metric", "id", "occurred_at"]),
       st.sampled_from([":", " :", ": ", "\t:"]))
def test_a_key_written_twice_is_never_taken_fast(key: str, colon: str) -> None:
    # The parser keeps the last value: "quantity": "1", "quantity": "1000" would bill 1000.
    plain = {"type": "usage", "id": "evt-1", "occurred_at": "2026-11-03T10:00:00Z",
             "customer_id": "c", "metric": "m", "quantity": "3"}
    raw = json.dumps(plain, separators=(",", ":"))[:-1] + f',"{key}"{colon}"9"}}'
    assert usage_command(raw.encode()) is None
    parsed = parse([Origin("file:x", "line 1", raw.encode())])
    assert parsed.commands == []
    assert f'the key "{key}" appears more than once' in parsed.rejected[0].reason


def test_timestamps_written_the_common_way_are_read_directly() -> None:
    for text, iso in [
        ("2026-11-03T10:00:00Z", "2026-11-03T10:00:00+00:00"),
        ("2026-11-03T10:00:00.123456+00:00", "2026-11-03T10:00:00.123456+00:00"),
    ]:
        found = utc_timestamp(text)
        assert found is not None and found[1] == iso and found[0].isoformat() == iso
    for text in ["2026-11-03T10:00:00.000000Z", "2026-11-03t10:00:00Z", "2026-11-03T10:00:00z",
                 "2026-11-03 10:00:00Z", "2026-11-03T10:00:00+01:00", "2026-11-03T10:00Z",
                 "2026-W45-2T10:00:00Z", "2026-11-03T10:00:00.5Z", ""]:
        assert utc_timestamp(text) is None
