"""The checked-in JSON Schemas are what the models generate, and they accept what producers in
other languages send by contract.md, and refuse the commonest mistakes the models refuse."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from consumers.messages import MESSAGE_TYPES, MessageRejected, parse_message
from consumers.messages.fields import NonNegativeDecimal, PositiveDecimal
from consumers.schemas import SCHEMA_DIR, SCHEMAS, main, schema, stale_files, write
from domain.money import digits_beyond_range
from tests.unit.message_examples import (
    CONTRACT_AMENDED,
    CONTRACT_CREATED,
    EXAMPLES,
    USAGE,
    USAGE_WATERMARK,
    changed,
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=FormatChecker())


def test_the_checked_in_schemas_are_current() -> None:
    assert stale_files() == [], "run: python -m consumers.schemas"
    assert main(["--check"]) == 0


def test_every_inbound_message_type_has_a_schema_and_the_schemas_are_valid() -> None:
    assert set(MESSAGE_TYPES) < set(SCHEMAS)
    for name in SCHEMAS:
        Draft202012Validator.check_schema(schema(name))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_contract_examples_are_valid_by_their_schema_and_the_inbound_one(name: str) -> None:
    example = EXAMPLES[name]

    validator(name).validate(example)
    validator("inbound").validate(example)


def test_defaults_and_extra_fields_are_valid_too() -> None:
    minimal_usage = changed(changed(USAGE, "properties", ...), "unknown_field", [1, 2])
    dated_watermark = changed(USAGE_WATERMARK, "complete_through", "2026-11-01")

    for example in (minimal_usage, dated_watermark, CONTRACT_AMENDED):
        validator("inbound").validate(example)


@pytest.mark.parametrize(
    "message",
    [
        changed(USAGE, "quantity", 12.5),
        changed(USAGE, "quantity", "-3"),
        changed(USAGE, "quantity", "1e3"),
        changed(USAGE, "quantity", "1000000000000000"),  # 10^15: a unit mistake, surely
        changed(CONTRACT_CREATED, "components.1.pricing.tiers.1.unit_amount", "0.0000000000001"),
        changed(USAGE, "customer_id", ...),
        changed(USAGE, "type", "usage.v2"),
        changed(USAGE, "occurred_at", "2026-11-03T10:00:00"),
        changed(CONTRACT_CREATED, "currency", "usd"),
        changed(CONTRACT_CREATED, "billing_frequency", "weekly"),
        changed(CONTRACT_CREATED, "components.2.kind", "bonus"),
        changed(CONTRACT_CREATED, "components.1.pricing.tiers.1.unit_amount", 0.002),
        changed(
            CONTRACT_CREATED,
            "components.1.pricing",
            {"model": "package", "package_size": "0.000", "package_amount": "5"},
        ),
    ],
)
def test_the_schemas_and_the_models_both_refuse_common_mistakes(message: dict[str, Any]) -> None:
    assert list(validator("inbound").iter_errors(message))
    with pytest.raises(MessageRejected):
        parse_message(json.dumps(message))


def test_regenerating_writes_every_file_once(tmp_path: Path) -> None:
    assert sorted(write(tmp_path)) == sorted(f"{name}.json" for name in SCHEMAS)
    assert write(tmp_path) == []
    assert {path.name for path in SCHEMA_DIR.glob("*.json")} == {
        path.name for path in tmp_path.iterdir()
    }


def _pattern(annotated: Any) -> re.Pattern[str]:
    (json_schema,) = [m.json_schema for m in annotated.__metadata__ if hasattr(m, "json_schema")]
    return re.compile(json_schema["pattern"])


@given(st.from_regex(r"[0-9]{1,18}(\.[0-9]{1,16})?", fullmatch=True))
def test_the_decimal_patterns_say_the_range_the_models_apply(text: str) -> None:
    # Producers validating by the schemas are refused what ingest refuses, however the value is
    # written (leading and trailing zeros do not count).
    in_range = digits_beyond_range(Decimal(text)) is None
    assert bool(_pattern(NonNegativeDecimal).fullmatch(text)) == in_range
    assert bool(_pattern(PositiveDecimal).fullmatch(text)) == (in_range and Decimal(text) > 0)
