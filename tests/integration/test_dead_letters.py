"""`billcycle deadletters`, and a consumer sending dead letters to their topic, read every dead
letter: the store reads them through an index of their own, so that the list costs the same in
a log of millions of events as in a new one; a store made before the index has it made at its
first open."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from infra.store.url import store_env
from tests.integration.indexed_topics import (
    fill_the_log,
    index_name,
    indexed,
    read_through_its_index,
)
from tests.integration.test_counted_properties import counting, ingest
from tests.store_sql import on_store

# Not JSON, a good contract, no type; then bytes not UTF-8, and m-1 again changed.
FIRST_FILE = (b"not json", json.dumps(counting("seats", "m-2")).encode(), b"{}")
CHANGED = json.dumps({**counting("seats", "m-1"), "customer_id": "cus_2"})
SECOND_FILE = (b"\xff not utf-8", CHANGED.encode())

# Each dead letter as (source, at, message id, raw, raw's encoding, the reason's start), in
# the order rejected.
REJECTED = [("b.jsonl", "line 1", None, "not json", "utf-8", "not JSON"),
            ("b.jsonl", "line 3", None, "{}", "utf-8", 'message: "type" is missing'),
            ("a.jsonl", "line 1", None, "/yBub3QgdXRmLTg=", "base64", "not UTF-8"),
            ("a.jsonl", "line 2", "m-1", CHANGED, "utf-8",
             "contract.created m-1: conflicting duplicate")]


def reject(app: BillingApplication, source: str, lines: tuple[bytes, ...]) -> None:
    IngestPipeline(app).process_lines(io.BytesIO(b"".join(line + b"\n" for line in lines)),
                                      source)


def reject_some(app: BillingApplication) -> None:
    """Rejected input from two files, not in their names' order, other events between; the
    first file read again, its rejected input kept once."""
    ingest(app, counting("seats", "m-1"))
    reject(app, "b.jsonl", FIRST_FILE)
    ingest(app, counting("seats", "m-3"))
    reject(app, "a.jsonl", SECOND_FILE)
    reject(app, "b.jsonl", FIRST_FILE)


def kept(letters: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The dead letters as REJECTED lists them, each checked to name its place in full."""
    assert all(d["position"] == f"{d['source']}@{d['at']}" for d in letters), letters
    return [(d["source"], d["at"], d["message_id"], d["raw"], d["raw_encoding"],
             d["reason"][:len(expected[5])])
            for d, expected in zip(letters, REJECTED, strict=True)]


def test_a_store_made_before_the_index_has_it_made_at_its_first_open(
        kind: str, url: str) -> None:
    # As an earlier billcycle left it: its dead letters kept in a log without the index.
    earlier = BillingApplication(env=store_env(url))
    on_store(url, f"DROP INDEX IF EXISTS {index_name(kind, 'dead_letter')}")
    reject_some(earlier)
    before = earlier.dead_letters()
    earlier.close()
    assert not indexed(kind, url, "dead_letter")

    upgraded = BillingApplication(env=store_env(url))
    try:
        assert indexed(kind, url, "dead_letter")
        assert upgraded.dead_letters() == before
        assert kept(before) == REJECTED
    finally:
        upgraded.close()


def test_the_dead_letters_are_read_through_their_index_in_a_large_log(
        kind: str, url: str, app: BillingApplication, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(app, counting("seats", "m-1"))
    reject(app, "b.jsonl", FIRST_FILE)
    fill_the_log(kind, url, 200_000)
    reject(app, "a.jsonl", SECOND_FILE)

    # Not from the log, page by page through every event's topic, but by the store's read of
    # their index alone.
    def scan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("dead letters read by a scan of the log")
    monkeypatch.setattr(app.recorder, "select_notifications", scan)
    assert kept(app.dead_letters()) == REJECTED
    read_through_its_index(kind, url, app, "dead_letter")
