"""The sample book: deterministic, valid except where it means not to be, and of every kind."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import date, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from consumers.messages import MessageRejected, parse_message
from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.commands import Origin
from infra.sample_book import CURRENCIES, LAGGING_METRIC, TIMEZONES, generate, write
from infra.store.url import store_env

SMALL: dict[str, Any] = {"contracts": 40, "seed": 3, "events": 6}


def book(**kwargs: Any) -> list[bytes]:
    return list(generate(**{**SMALL, **kwargs}))


def intended_bad(line: bytes) -> bool:
    return b'"sample_bad"' in line


def good_messages(lines: list[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if not intended_bad(line):
            yield json.loads(line)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_book() -> None:
    assert book() == book()
    assert book() != book(seed=4)


def test_lines_are_generated_lazily_so_a_huge_book_starts_at_once() -> None:
    first = list(islice(generate(contracts=100_000, events=1000), 5))
    assert json.loads(first[0])["contract_id"] == "ct_00000"


def test_every_line_parses_except_the_intended_bad_ones() -> None:
    lines = book()
    refused = []
    for line in lines:
        try:
            parse_message(line)
        except MessageRejected as exc:
            refused.append((line, exc.reason))
    assert all(intended_bad(line) for line, _ in refused), refused
    reasons = " | ".join(reason for _, reason in refused)
    for expected in ("not JSON", "negative", "ISO 4217", "tiers must ascend"):
        assert expected in reasons
    # The other two are well-formed; only the store can tell they are wrong.
    assert sum(intended_bad(line) for line in lines) == len(refused) + 2


def test_the_pipeline_rejects_exactly_the_bad_ones_and_ignores_duplicates() -> None:
    lines = book()
    with closing(BillingApplication(env=store_env("sqlite:///:memory:"))) as app:
        report = IngestPipeline(app).process(_origins(lines))
    bad = {f"line {n}" for n, line in enumerate(lines, start=1) if intended_bad(line)}
    assert {r.origin.position for r in report.rejected} == bad
    reasons = " | ".join(r.reason for r in report.rejected)
    assert "unknown contract ct_missing" in reasons
    assert "conflicting duplicate" in reasons
    assert report.duplicates > 1  # resent usage and a resent contract.created
    assert report.accepted + report.duplicates + len(report.rejected) == len(lines)


@pytest.mark.parametrize("cycle_date", [date(2027, 3, 31), date(2028, 3, 1), date(2026, 7, 15)])
def test_any_cycle_date_gives_a_valid_book_of_the_two_months_before_it(cycle_date: date) -> None:
    lines = book(contracts=40, cycle_date=cycle_date)
    for line in lines:
        if not intended_bad(line):
            parse_message(line)
    created = [m for m in good_messages(lines) if m["type"] == "contract.created"]
    earliest = date(cycle_date.year, cycle_date.month, 1) - timedelta(days=62)
    assert all(earliest <= date.fromisoformat(m["start_date"]) < cycle_date for m in created)
    assert any(m["billing_anchor_date"].endswith("-31") for m in created)


def test_the_two_parts_by_arrival_make_the_whole_book() -> None:
    before, after = book(part="before"), book(part="after")
    assert before and after
    assert sorted(before + after) == sorted(book())
    assert not any(intended_bad(line) for line in before)


def test_the_book_holds_every_kind_of_contract_and_event() -> None:
    messages = list(good_messages(book(contracts=60)))
    created = list({m["id"]: m for m in messages if m["type"] == "contract.created"}.values())
    assert len(created) == 60
    components = [c for m in created for c in m["components"]]
    usage = [c for c in components if c["kind"] == "usage"]
    assert {m["currency"] for m in created} == set(CURRENCIES)
    assert {m["timezone"] for m in created} == set(TIMEZONES)
    assert {m["billing_frequency"] for m in created} == {"monthly", "quarterly", "annual"}
    assert {c["pricing"]["model"] for c in usage} == {"per_unit", "graduated", "volume", "package"}
    assert {"sum", "unique_count", "max"} <= {c["aggregation"] for c in usage}
    assert any(c.get("billing_timing") == "in_arrears" for c in components)
    assert any(c.get("minimum_amount") for c in usage)
    assert any(m["usage_threshold_amount"] for m in created)
    assert any(m["billing_anchor_date"].endswith("-31") for m in created)
    assert all("2026-10-01" <= m["start_date"] < "2026-12-01" for m in created)
    kinds = Counter(m["type"] for m in messages)
    for kind in ("contract.amended", "contract.terminated", "milestone.completed"):
        assert kinds[kind] > 0, kind
    november = [m for m in messages if m["type"] == "usage"
                and m["occurred_at"].startswith("2026-11")]
    assert len(november) > 100


def test_watermarks_cover_the_month_except_one_lagging_metric() -> None:
    marks = [m for m in good_messages(book(part="after")) if m["type"] == "usage.watermark"]
    through = {m["metric"]: m["complete_through"] for m in marks}
    assert through.pop(LAGGING_METRIC) < "2026-12-01"
    assert through and all(t >= "2026-12-01T12" for t in through.values())


def test_write_writes_the_generated_lines(tmp_path: Path) -> None:
    path = tmp_path / "book.jsonl"
    count = write(path, contracts=40, seed=3, events=6)
    assert path.read_bytes() == b"".join(book())
    assert count == len(book())


def test_a_book_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 contract"):
        next(generate(contracts=0))
    with pytest.raises(ValueError, match="must be >= 0"):
        next(generate(events=-1))


def _origins(lines: list[bytes]) -> list[Origin]:
    return [Origin("test", f"line {n}", line.rstrip(b"\n"))
            for n, line in enumerate(lines, start=1)]
