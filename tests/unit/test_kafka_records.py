"""The record batch reader gives what kafka-python's own loop gives, record for record.

Batches are built with kafka-python's own builders (every message format, compression,
transactional batches, headers, null keys and values, sizes that need long varints), read once
by the library's `PartitionRecords` and once by `FastPartitionRecords`, and compared: the
records, and the positions and counts the fetcher keeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.serializer import Deserializer

from consumers.kafka_records import FastPartitionRecords, install


class Text(Deserializer):  # type: ignore[misc]
    def deserialize(self, topic: str, headers: Any, data: bytes) -> str:
        return data.decode()


TP = TopicPartition("billing.usage", 2)
GZIP = 1

long_payload = st.integers(8190, 8300).map(lambda n: b"v" * n)  # three-byte varint sizes
payloads = st.one_of(st.none(), st.binary(max_size=40), long_payload)
headers = st.lists(st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=20))),
                   max_size=3)
records = st.lists(
    st.tuples(st.integers(1_600_000_000_000, 1_900_000_000_000), payloads, payloads, headers),
    min_size=1, max_size=70)


def build(batches: list[list[tuple[int, Any, Any, Any]]], magic: int = 2, compression: int = 0,
          transactional: bool = False, first_offset: int = 0) -> bytes:
    """Batches one after the other, as a fetch response carries them."""
    data, offset = b"", first_offset
    for batch in batches:
        producer = dict(transactional=True, producer_id=7, producer_epoch=0,
                        base_sequence=offset) if transactional else {}
        builder = MemoryRecordsBuilder(magic, compression, 1 << 30, offset=offset, **producer)
        for timestamp, key, value, hdrs in batch:
            if magic < 2 and key is None and value is None:
                value = b""  # a legacy null message is a tombstone the builder refuses
            assert builder.append(timestamp, key, value, hdrs if magic >= 2 else None)
        builder.close()
        data += bytes(builder.buffer())
        offset += len(batch)
    return data


def read(kind: type[Any], data: bytes, fetch_offset: int = 0,
         isolation: Any = IsolationLevel.READ_UNCOMMITTED) -> tuple[Any, ...]:
    drained: list[bool] = []
    partition = kind(fetch_offset, TP, MemoryRecords(data), check_crcs=True,
                     isolation_level=isolation, on_drain=lambda _: drained.append(True))
    taken = partition.take()
    return (taken, partition.next_fetch_offset, partition.records_read, partition.bytes_read,
            partition.leader_epoch, drained)


def same(data: bytes, **kwargs: Any) -> None:
    library = read(Fetcher.PartitionRecords, data, **kwargs)
    assert read(FastPartitionRecords, data, **kwargs) == library
    assert library[0]  # something was read


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=3), st.sampled_from([0, GZIP]))
def test_v2_batches_read_as_the_library_reads_them(batches: Any, compression: int) -> None:
    same(build(batches, compression=compression))


@settings(max_examples=20, deadline=None)
@given(st.lists(records, min_size=1, max_size=2), st.sampled_from([0, 1]),
       st.sampled_from([0, GZIP]))
def test_legacy_message_sets_read_as_the_library_reads_them(batches: Any, magic: int,
                                                            compression: int) -> None:
    same(build(batches, magic=magic, compression=compression))


@settings(max_examples=20, deadline=None)
@given(st.lists(records, min_size=1, max_size=2))
def test_transactional_batches_read_committed(batches: Any) -> None:
    same(build(batches, transactional=True), isolation=IsolationLevel.READ_COMMITTED)


def test_a_fetch_from_the_middle_of_a_batch_skips_the_records_before_it() -> None:
    batch: list[tuple[int, bytes, bytes, list[Any]]] = [
        (1_700_000_000_000 + i, b"k", b"v%d" % i, []) for i in range(100)]
    same(build([batch, batch], first_offset=500), fetch_offset=640)


def test_a_damaged_record_is_refused_as_the_library_refuses_it() -> None:
    data = bytearray(build([[(1_700_000_000_000, b"key", b"value", [])] * 3]))
    data[-3] ^= 0xFF  # inside the last record: the CRC no longer matches
    for kind in (Fetcher.PartitionRecords, FastPartitionRecords):
        with pytest.raises(CorruptRecordError):
            read(kind, bytes(data))


def test_installed_only_where_the_library_loop_would_do_the_same() -> None:
    plain = KafkaConsumer(bootstrap_servers="127.0.0.1:9", api_version=(2, 8))
    with_deserializer = KafkaConsumer(bootstrap_servers="127.0.0.1:9", api_version=(2, 8),
                                      value_deserializer=Text())
    try:
        assert install(plain)
        assert plain._fetcher.PartitionRecords is FastPartitionRecords
        assert not install(with_deserializer)
        assert with_deserializer._fetcher.PartitionRecords is Fetcher.PartitionRecords
    finally:
        plain.close()
        with_deserializer.close()
