"""A dead letter on the topic always fits the room it is given (QA15 H1): whole when it
fits, else its raw cut to a beginning of the record's bytes and marked; a letter the broker
still refuses as too large is sent without raw, and none holds its partition up."""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import MessageSizeTooLargeError

from consumers.deadletter_topic import DEFAULT_MAX_BYTES, RECORD_OVERHEAD, DeadLetterTopic
from consumers.outbound import FITS_FROM, DeadLetter, dead_letter, fitted, stripped
from consumers.patience import Patience
from infra.cli_kafka import DEFAULT_DEADLETTER_BYTES, LEAST_DEADLETTER_BYTES

# What JSON escapes (quotes, backslashes, control characters: up to 6 bytes each), and
# characters of 2, 3 and 4 bytes in UTF-8.
ESCAPED = st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "€", "😀", "a"])
PATTERN = st.text(ESCAPED, min_size=1, max_size=40) | st.text(min_size=1, max_size=40)


def letter(raw: bytes, message_id: str | None = "evt-1", reason: str = "quantity is negative",
           topic: str = "billing.usage") -> DeadLetter:
    """The letter for `raw` as the store keeps it (text if UTF-8, else base64)."""
    try:
        text, encoding = raw.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return dead_letter({"source": f"kafka:{topic}/2", "at": "offset 4211",
                        "message_id": message_id, "reason": reason, "raw": text,
                        "raw_encoding": encoding})


def size(message: DeadLetter) -> int:
    return len(message.model_dump_json().encode())


def kept(message: DeadLetter) -> bytes:
    if message.raw_encoding == "base64":
        return base64.b64decode(message.raw)
    return message.raw.encode()


@settings(max_examples=150, deadline=None)
@given(
    raw=st.one_of(
        st.tuples(PATTERN, st.integers(1, 4000)).map(lambda p: (p[0] * p[1]).encode()),
        st.tuples(st.binary(min_size=1, max_size=60), st.integers(1, 3000)).map(
            lambda p: p[0] * p[1]),
    ),
    room=st.integers(FITS_FROM, 80_000),
    message_id=st.none() | st.text(ESCAPED, max_size=30) | PATTERN.map(lambda p: p * 3000),
    reason=st.text(max_size=200) | PATTERN.map(lambda p: p * 3000),
    topic=st.text("abc.-_", min_size=1, max_size=249),
)
def test_a_dead_letter_always_fits_its_room_keeping_a_beginning_of_the_record(
    raw: bytes, room: int, message_id: str | None, reason: str, topic: str
) -> None:
    whole = letter(raw, message_id, reason, topic)

    sent = fitted(whole, room)

    assert size(sent) <= room
    assert sent.raw_size == len(raw) and raw.startswith(kept(sent))
    if size(whole) <= room:
        assert sent == whole and not sent.raw_truncated and sent.raw_note is None
    else:
        assert sent.raw_truncated and sent.raw_note is not None
        assert f"the first {len(kept(sent)):,} of the record's {len(raw):,} bytes" in (
            sent.raw_note)
        if len(kept(sent)) < len(raw):
            # As much as fits: one more character (6 bytes escaped at most) or 4 of base64,
            # and a digit more in the note, would not.
            assert size(sent) > room - 10
    stripped_letter = stripped(whole)
    assert size(stripped_letter) <= FITS_FROM and stripped_letter.raw == ""
    assert stripped_letter.raw_truncated and stripped_letter.raw_size == len(raw)


def test_the_qa_cases_are_cut_to_the_default_room_and_say_where_the_rest_is() -> None:
    binary = bytes(0x80 + i % 120 for i in range(900_000))  # 1.2 MB as base64
    escaped = ('{"type": "usage", "properties": {"x": "' + '\\"\\\\' * 200_000 + '"}}').encode()
    for raw in (binary, escaped):
        sent = fitted(letter(raw), DEFAULT_MAX_BYTES - RECORD_OVERHEAD)
        assert DEFAULT_MAX_BYTES - RECORD_OVERHEAD - 8 <= size(sent) <= (
            DEFAULT_MAX_BYTES - RECORD_OVERHEAD)
        assert sent.raw_truncated and raw.startswith(kept(sent))
        assert sent.raw_note is not None and sent.raw_note.endswith(
            "billcycle deadletters --json has them all (source kafka:billing.usage/2, "
            "offset 4211)")


def test_the_command_line_s_sizes_agree_with_the_dead_letter_topic_s() -> None:
    assert DEFAULT_DEADLETTER_BYTES == DEFAULT_MAX_BYTES
    # Room for the letter's envelope, its headers (a topic name of 249) and a key dropped.
    assert LEAST_DEADLETTER_BYTES >= FITS_FROM + RECORD_OVERHEAD + 300


@dataclass
class Refusing:
    """A producer whose broker refuses values over `limit` bytes, as kafka-python reports it:
    the send's future fails with MessageSizeTooLargeError."""

    limit: int
    sent: list[bytes] = field(default_factory=list)
    closed: bool = False

    def send(self, topic: str, value: bytes, **kwargs: Any) -> Any:
        return Future(None if len(value) <= self.limit else MessageSizeTooLargeError(),
                      self.sent, value)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@dataclass
class Future:
    error: Exception | None
    sent: list[bytes]
    value: bytes

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(self.value)


def test_a_letter_the_broker_refuses_is_sent_again_without_raw_by_a_fresh_producer() -> None:
    said: list[str] = []
    first, fresh = Refusing(limit=50_000), Refusing(limit=50_000)
    topic = DeadLetterTopic(None, first, "billing.deadletter",  # type: ignore[arg-type]
                            Patience(said.append, threading.Event()), fresh_producer=lambda: fresh)
    whole = letter(b"\xff" * 100_000)

    topic._send([(whole, b"cus_0"), (letter(b"small"), None)])

    assert first.closed and topic.producer is fresh
    (bare,) = [DeadLetter.model_validate_json(v) for v in fresh.sent]
    assert (bare.raw, bare.raw_truncated, bare.raw_size) == ("", True, 100_000)
    assert "refused 1 dead letter as too large" in said[-1]


def test_a_letter_refused_even_without_raw_is_kept_in_the_database_only() -> None:
    said: list[str] = []
    refusing = Refusing(limit=10)
    topic = DeadLetterTopic(None, refusing, "billing.deadletter",  # type: ignore[arg-type]
                            Patience(said.append, threading.Event()),
                            fresh_producer=lambda: refusing)

    topic._send([(letter(b"not json"), None)])  # returns: the partition is not held up

    assert refusing.sent == []
    assert "as too large even without the record: it is kept in the database only" in said[-1]


def test_a_key_that_leaves_the_letter_too_little_room_is_dropped() -> None:
    producer = Refusing(limit=DEFAULT_MAX_BYTES)
    topic = DeadLetterTopic(None, producer, "billing.deadletter",  # type: ignore[arg-type]
                            Patience(lambda _: None, threading.Event()))
    _, key = topic._fitted(letter(b"x"), b"k" * DEFAULT_MAX_BYTES)
    assert key is None
    _, key = topic._fitted(letter(b"x"), b"cus_0")
    assert key == b"cus_0"


def test_a_partition_s_letters_fit_with_their_key_and_headers() -> None:
    topic = DeadLetterTopic(None, None, "billing.deadletter",  # type: ignore[arg-type]
                            Patience(lambda _: None, threading.Event()), max_bytes=40_000)
    sent, key = topic._fitted(letter(b"\xff" * 100_000, topic="t" * 249), b"k" * 5_000)
    assert key is not None
    assert size(sent) + len(key) + 249 + 30 <= 40_000 - RECORD_OVERHEAD
