"""Inbound messages: every contract.md example parses and converts; bad input is rejected with
one line a person can act on; unknown fields are kept; fingerprints follow content."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.messages import (
    MESSAGE_TYPES,
    ContractAmended,
    ContractCreated,
    ContractTerminated,
    MessageRejected,
    MilestoneCompleted,
    PaymentReceived,
    Usage,
    UsageWatermark,
    fingerprint,
    parse_message,
)
from consumers.messages.errors import SHOWN_PROBLEMS
from domain.terms import (
    Aggregation,
    BillingFrequency,
    BillingTiming,
    Graduated,
    MilestoneComponent,
    Package,
    SubscriptionComponent,
    Tier,
    UsageComponent,
    Volume,
)
from tests.unit.message_examples import (
    CONTRACT_AMENDED,
    CONTRACT_CREATED,
    CONTRACT_TERMINATED,
    EXAMPLES,
    MILESTONE_COMPLETED,
    PAYMENT_RECEIVED,
    USAGE,
    USAGE_WATERMARK,
    changed,
)


def parse(message: dict[str, Any]) -> Any:
    return parse_message(json.dumps(message).encode())


def reason(raw: dict[str, Any] | bytes | str) -> str:
    with pytest.raises(MessageRejected) as rejected:
        parse_message(json.dumps(raw) if isinstance(raw, dict) else raw)
    return rejected.value.reason


# --- every example parses and converts --------------------------------------------------------


def test_the_contract_created_example_becomes_contract_terms() -> None:
    message = parse(CONTRACT_CREATED)
    assert isinstance(message, ContractCreated)

    terms = message.to_terms()

    assert (terms.contract_id, terms.customer_id, terms.currency) == ("ct_1", "cus_1", "USD")
    assert terms.start_date == date(2026, 10, 1) and terms.end_date is None
    assert terms.billing_frequency is BillingFrequency.MONTHLY
    assert terms.billing_anchor_date == date(2026, 10, 1)
    assert (terms.timezone, terms.payment_terms_days) == ("UTC", 30)
    assert terms.usage_threshold_amount is None
    assert terms.components == (
        SubscriptionComponent("platform", Decimal("1000.00"), Decimal(1), BillingTiming.IN_ADVANCE),
        UsageComponent(
            "api",
            "api_calls",
            Graduated((Tier(Decimal(1000), Decimal(0)), Tier(None, Decimal("0.002")))),
            Aggregation.SUM,
        ),
        MilestoneComponent("golive", "go_live", Decimal("5000.00")),
    )
    assert terms.extra == {}


def test_a_minimal_contract_gets_the_documented_defaults() -> None:
    minimal = {
        "type": "contract.created",
        "id": "m-9",
        "occurred_at": "2026-10-01T00:00:00Z",
        "contract_id": "ct_9",
        "customer_id": "cus_9",
        "currency": "JPY",
        "start_date": "2026-10-15",
        "billing_frequency": "quarterly",
        "components": [
            {"id": "base", "kind": "subscription", "amount": "9000"},
            {
                "id": "calls",
                "kind": "usage",
                "metric": "calls",
                "pricing": {"model": "volume", "tiers": [{"up_to": None, "unit_amount": "1"}]},
            },
        ],
    }

    terms = parse(minimal).to_terms()

    # timezone UTC, anchor = start_date, due in 30 days, no end, no threshold
    assert terms.timezone == "UTC"
    assert terms.billing_anchor_date == date(2026, 10, 15)
    assert terms.payment_terms_days == 30
    assert terms.end_date is None and terms.usage_threshold_amount is None
    # quantity 1, in advance; aggregation sum; flat_amount 0; no minimum
    assert terms.components == (
        SubscriptionComponent("base", Decimal(9000), Decimal(1), BillingTiming.IN_ADVANCE),
        UsageComponent("calls", "calls", Volume((Tier(None, Decimal(1), Decimal(0)),))),
    )


def test_an_optional_field_sent_as_null_takes_its_default() -> None:
    # Serializers in many languages write null for a field not set.
    nulls = changed(CONTRACT_CREATED, "timezone", None)
    nulls = changed(nulls, "payment_terms_days", None)
    nulls = changed(nulls, "components.0.quantity", None)
    nulls = changed(nulls, "components.0.billing_timing", None)
    nulls = changed(nulls, "components.1.aggregation", None)
    terms = parse(nulls).to_terms()
    assert terms.timezone == "UTC" and terms.payment_terms_days == 30
    platform = terms.components[0]
    assert isinstance(platform, SubscriptionComponent)
    assert (platform.quantity, platform.billing_timing) == (Decimal(1), BillingTiming.IN_ADVANCE)
    assert parse(changed(USAGE, "properties", None)).properties == {}
    # A required field is still required, and null keeps its meaning where it has one.
    assert reason(changed(CONTRACT_CREATED, "currency", None)).startswith(
        "contract.created m-1: currency ")
    assert parse(changed(CONTRACT_AMENDED, "usage_threshold_amount", None)).sets_usage_threshold


def test_an_amendment_gives_the_new_component_list() -> None:
    message = parse(CONTRACT_AMENDED)
    assert isinstance(message, ContractAmended)

    assert message.contract_id == "ct_1" and message.effective_date == date(2026, 11, 15)
    assert message.to_components() == (
        SubscriptionComponent("platform", Decimal("1500.00")),
        UsageComponent(
            "seats",
            "active_users",
            Package(Decimal(10), Decimal(50)),
            Aggregation.UNIQUE_COUNT,
            unique_property="user_id",
        ),
    )
    assert message.usage_threshold_amount == Decimal("2000.00") and message.sets_usage_threshold
    assert message.payment_terms_days == 45


def test_an_amendment_changes_threshold_and_terms_only_when_it_carries_them() -> None:
    silent = parse(
        changed(changed(CONTRACT_AMENDED, "usage_threshold_amount", ...), "payment_terms_days", ...)
    )
    removing = parse(changed(CONTRACT_AMENDED, "usage_threshold_amount", None))

    assert not silent.sets_usage_threshold and silent.payment_terms_days is None
    assert removing.sets_usage_threshold and removing.usage_threshold_amount is None


def test_termination_and_milestone_carry_their_dates() -> None:
    terminated = parse(CONTRACT_TERMINATED)
    milestone = parse(MILESTONE_COMPLETED)

    assert isinstance(terminated, ContractTerminated)
    assert terminated.end_date == date(2027, 1, 1)
    # +01:00 is read as the same instant in UTC
    assert terminated.occurred_at == datetime(2026, 12, 20, 16, 0, tzinfo=UTC)
    assert isinstance(milestone, MilestoneCompleted)
    assert (milestone.milestone, milestone.completed_on) == ("go_live", date(2026, 10, 20))


def test_usage_is_read_as_decimal_quantity_and_properties() -> None:
    message = parse(USAGE)

    assert isinstance(message, Usage)
    assert (message.customer_id, message.metric) == ("cus_1", "api_calls")
    assert message.quantity == Decimal(500)
    assert message.properties == {"region": "eu"}
    assert message.contract_id is None
    assert message.occurred_at == datetime(2026, 11, 3, 10, tzinfo=UTC)
    # properties default to {}
    assert parse(changed(USAGE, "properties", ...)).properties == {}


def test_a_watermark_takes_a_timestamp_or_a_date_meaning_midnight_utc() -> None:
    stamped = parse(USAGE_WATERMARK)
    dated = parse(changed(USAGE_WATERMARK, "complete_through", "2026-11-01"))
    offset = parse(changed(USAGE_WATERMARK, "complete_through", "2026-11-01T01:00:00+01:00"))

    assert isinstance(stamped, UsageWatermark) and stamped.source == "gateway"
    midnight = datetime(2026, 11, 1, tzinfo=UTC)
    assert stamped.complete_through == dated.complete_through == midnight
    assert offset.complete_through == midnight


def test_a_payment_has_amount_and_currency() -> None:
    message = parse(PAYMENT_RECEIVED)

    assert isinstance(message, PaymentReceived)
    assert (message.invoice_number, message.amount, message.currency) == (
        "INV-000001",
        Decimal("1005.00"),
        "USD",
    )


def test_every_message_type_has_an_example_and_bytes_or_text_both_parse() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)
    for example in EXAMPLES.values():
        text = json.dumps(example)
        assert parse_message(text) == parse_message(text.encode())


def test_an_end_date_equal_to_the_start_date_is_a_contract_without_service() -> None:
    message = parse(changed(CONTRACT_CREATED, "end_date", "2026-10-01"))

    assert message.to_terms().end_date == message.to_terms().start_date


# --- unknown fields are kept ------------------------------------------------------------------


def test_unknown_fields_are_kept_at_every_level() -> None:
    contract = changed(CONTRACT_CREATED, "sales_rep", {"name": "Ann"})
    contract = changed(contract, "components.0", {**contract["components"][0], "sku": "P-1"})
    usage = changed(USAGE, "source_ip", "10.0.0.1")

    created = parse(contract)
    assert created.to_terms().extra == {"sales_rep": {"name": "Ann"}}
    assert created.model_dump(mode="json")["components"][0]["sku"] == "P-1"
    assert parse(usage).model_extra == {"source_ip": "10.0.0.1"}


# --- rejections -------------------------------------------------------------------------------

TYPES = ", ".join(MESSAGE_TYPES)
CREATED_PRICING = "components.1.pricing"

REJECTIONS = [
    # not a message at all
    (b"\xff{}", "not UTF-8 (byte 0xff at position 0); encode messages as UTF-8"),
    (
        "hello",
        "not JSON (expected value at line 1 column 1); send one JSON object per message (per "
        "line in a file)",
    ),
    ("[1, 2]", "an array is not a message; send one JSON object per message (per line in a file)"),
    (b"", "empty: the message has no content (an empty value, not a null one); send one JSON "
     "object per message"),
    (" \n", "empty: the message has no content (an empty value, not a null one); send one JSON "
     "object per message"),
    (
        changed(USAGE, "type", "usage.v2"),
        f'message evt-123: unknown message type "usage.v2"; known types: {TYPES}',
    ),
    (changed(USAGE, "type", ...), f'message evt-123: "type" is missing; set it to one of {TYPES}'),
    # envelope
    (changed(USAGE, "id", ...), "usage: id is missing; add it"),
    (changed(USAGE, "id", ""), "usage: id is empty; give a non-empty string"),
    (changed(USAGE, "id", 7), "usage: id must be a string, not 7"),
    (
        json.dumps(USAGE).replace('"quantity": ', '"quantity": "1", "quantity": ', 1),
        'usage evt-123: the key "quantity" appears more than once in an object; write each key '
        "once (which value was meant cannot be told)",
    ),
    (
        changed(USAGE, "quantity", "1000000000000000"),
        'usage evt-123: quantity "1000000000000000" has more than 15 digits before the decimal '
        "point; billcycle takes values below 10^15 with at most 12 decimal places (is the unit "
        "right?)",
    ),
    (
        changed(USAGE, "quantity", "0.0000000000001"),
        'usage evt-123: quantity "0.0000000000001" has more than 12 digits after the decimal '
        "point; billcycle takes values below 10^15 with at most 12 decimal places (is the unit "
        "right?)",
    ),
    (
        changed(USAGE, "occurred_at", "2026-11-03T10:00:00"),
        'usage evt-123: occurred_at "2026-11-03T10:00:00" has no offset; add one, e.g. '
        '"2026-11-03T10:00:00Z"',
    ),
    (
        changed(USAGE, "occurred_at", "0001-01-01T00:30:00+01:00"),
        'usage evt-123: occurred_at "0001-01-01T00:30:00+01:00" is outside the years 0001 to '
        "9999 once in UTC; check the date and offset",
    ),
    (
        changed(USAGE, "occurred_at", "2026-11-01T00:00:00+25:00"),
        'usage evt-123: occurred_at "2026-11-01T00:00:00+25:00" has an offset beyond -23:59 to '
        "+23:59; check the offset",
    ),
    (
        changed(USAGE, "occurred_at", "1700000000"),
        'usage evt-123: occurred_at "1700000000" is not an RFC 3339 timestamp; write one with '
        'offset such as "2026-11-03T10:00:00Z"',
    ),
    (
        changed(USAGE, "occurred_at", "2026-02-30T10:00:00Z"),
        'usage evt-123: occurred_at "2026-02-30T10:00:00Z" is not a real time (day is out of '
        "range for month)",
    ),
    # money and quantities
    (
        changed(USAGE, "quantity", "-3"),
        'usage evt-123: quantity "-3" is negative; it must be >= 0',
    ),
    (
        changed(USAGE, "quantity", 12.5),
        'usage evt-123: quantity must be a decimal string such as "12.5", not the JSON number 12.5',
    ),
    (
        changed(USAGE, "quantity", "1e3"),
        'usage evt-123: quantity "1e3" is not a plain decimal; write digits with an optional '
        'fraction such as "12.5" (no exponent, spaces, NaN or Infinity)',
    ),
    (
        changed(USAGE, "quantity", "Infinity"),
        'usage evt-123: quantity "Infinity" is not a plain decimal; write digits with an '
        'optional fraction such as "12.5" (no exponent, spaces, NaN or Infinity)',
    ),
    (
        changed(USAGE, "quantity", None),
        'usage evt-123: quantity must be a decimal string such as "12.5", not null',
    ),
    (
        changed(USAGE, "properties", []),
        "usage evt-123: properties must be a JSON object, not an array",
    ),
    (
        changed(PAYMENT_RECEIVED, "amount", "0.00"),
        'payment.received pay-1: amount "0.00" is not positive; it must be > 0',
    ),
    (
        changed(PAYMENT_RECEIVED, "currency", "usd"),
        'payment.received pay-1: currency "usd" is not an ISO 4217 currency code; use one such '
        "as USD, EUR or JPY",
    ),
    # several problems: each of them, numbered, so that one resend fixes them all
    (
        changed(changed(USAGE, "customer_id", ...), "quantity", "-1"),
        'usage evt-123: 2 problems: (1) customer_id is missing; add it; (2) quantity "-1" is '
        "negative; it must be >= 0",
    ),
    # contract terms
    (
        changed(CONTRACT_CREATED, "timezone", "Mars/Olympus"),
        'contract.created m-1: timezone "Mars/Olympus" is not an IANA time zone; use a name '
        'such as "UTC" or "Europe/Berlin"',
    ),
    (
        changed(CONTRACT_CREATED, "billing_frequency", "weekly"),
        'contract.created m-1: billing_frequency "weekly" is not one of "monthly", "quarterly" '
        'or "annual"',
    ),
    (
        changed(CONTRACT_CREATED, "start_date", "2026-10-01T00:00:00Z"),
        'contract.created m-1: start_date "2026-10-01T00:00:00Z" is not a date; write '
        'YYYY-MM-DD such as "2026-10-01"',
    ),
    (
        changed(CONTRACT_CREATED, "end_date", "2026-09-30"),
        "contract.created m-1: end_date: 2026-09-30 is before start_date 2026-10-01; end_date "
        "must be on or after start_date",
    ),
    (
        changed(CONTRACT_CREATED, "payment_terms_days", "30"),
        'contract.created m-1: payment_terms_days must be a whole number such as 30, not "30"',
    ),
    (
        changed(CONTRACT_CREATED, "payment_terms_days", -1),
        "contract.created m-1: payment_terms_days -1 is below 0; it must be >= 0",
    ),
    # components
    (
        changed(CONTRACT_CREATED, "components.2.id", "api"),
        'contract.created m-1: components[2].id: "api" is already the id of components[1]; '
        "component ids must be unique",
    ),
    (
        changed(CONTRACT_CREATED, "components.2.kind", "bonus"),
        'contract.created m-1: components[2].kind "bonus" is not one of subscription, usage, '
        "milestone",
    ),
    (
        changed(CONTRACT_CREATED, "components.0.billing_timing", "later"),
        'contract.created m-1: components[0].billing_timing "later" is not one of "in_advance" '
        'or "in_arrears"',
    ),
    (
        changed(CONTRACT_CREATED, "components.1.aggregation", "unique_count"),
        "contract.created m-1: components[1].unique_property: aggregation unique_count needs "
        '"unique_property", the property whose distinct values are counted',
    ),
    (
        changed(CONTRACT_CREATED, "components.1.unique_property", "user_id"),
        'contract.created m-1: components[1].unique_property: set, but aggregation is "sum"; '
        "remove unique_property or use aggregation unique_count",
    ),
    (
        changed(CONTRACT_CREATED, f"{CREATED_PRICING}.model", "tiered"),
        'contract.created m-1: components[1].pricing.model "tiered" is not one of per_unit, '
        "graduated, volume, package",
    ),
    (
        changed(CONTRACT_CREATED, f"{CREATED_PRICING}.tiers.1.up_to", "50"),
        "contract.created m-1: components[1].pricing.tiers: last tier 2 up_to 50; the last tier "
        "must have up_to null so every quantity has a price; tier 2 up_to 50 after 1000; tiers "
        "must ascend",
    ),
    (
        changed(CONTRACT_CREATED, f"{CREATED_PRICING}.tiers.1.unit_amount", "-0.002"),
        'contract.created m-1: components[1].pricing.tiers[1].unit_amount "-0.002" is '
        "negative; it must be >= 0",
    ),
    (
        changed(
            CONTRACT_CREATED,
            CREATED_PRICING,
            {"model": "package", "package_size": "0", "package_amount": "5"},
        ),
        'contract.created m-1: components[1].pricing.package_size "0" is not positive; it must '
        "be > 0",
    ),
    (
        changed(CONTRACT_AMENDED, "effective_date", ...),
        "contract.amended m-2: effective_date is missing; add it",
    ),
    (changed(USAGE, "quantity", "-0"), 'usage evt-123: quantity "-0" has a minus sign; write 0'),
    (
        changed(CONTRACT_CREATED, "components.0.kind", None),
        "contract.created m-1: components[0].kind is null; use one of subscription, usage, "
        "milestone",
    ),
    (
        changed(USAGE, "quantity", True),
        'usage evt-123: quantity must be a decimal string such as "12.5", not the JSON boolean '
        "true",
    ),
    (
        changed(CONTRACT_CREATED, "components.2.milestone", ""),
        "contract.created m-1: components[2].milestone is empty; give a non-empty string",
    ),
    (
        changed(CONTRACT_CREATED, "start_date", "0026-10-01"),
        'contract.created m-1: start_date "0026-10-01" is outside the years 1900 to 2999; '
        "check the year",
    ),
    (
        changed(CONTRACT_TERMINATED, "end_date", "9999-12-15"),
        'contract.terminated m-3: end_date "9999-12-15" is outside the years 1900 to 2999; '
        "check the year",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), REJECTIONS)
def test_bad_input_is_rejected_with_an_actionable_reason(
    raw: dict[str, Any] | bytes | str, expected: str
) -> None:
    assert reason(raw) == expected


def test_tiers_must_ascend() -> None:
    tiers = [
        {"up_to": "100", "unit_amount": "0.01"},
        {"up_to": "50", "unit_amount": "0.02"},
        {"up_to": None, "unit_amount": "0.03"},
    ]
    contract = changed(CONTRACT_CREATED, f"{CREATED_PRICING}.tiers", tiers)

    assert reason(contract) == (
        "contract.created m-1: components[1].pricing.tiers: tier 2 up_to 50 after 100; "
        "tiers must ascend"
    )


def test_a_message_with_very_many_problems_shows_the_first_ones_and_counts_the_rest() -> None:
    # Twelve components with two problems each: the reason stays a few lines long.
    components = [{"id": n, "kind": "subscription"} for n in range(12)]
    said = reason({**CONTRACT_CREATED, "components": components})

    assert said.startswith("contract.created m-1: 24 problems: (1) components[0].id must be a "
                           "string, not 0; (2) components[0].amount is missing; add it; (3) ")
    assert said.count("; (") == SHOWN_PROBLEMS - 1 and said.endswith("; and 14 more")


def test_a_rejection_names_the_message_id() -> None:
    with pytest.raises(MessageRejected) as rejected:
        parse(changed(USAGE, "quantity", "-3"))

    assert rejected.value.message_id == "evt-123"
    assert str(rejected.value) == rejected.value.reason


# --- fingerprints -----------------------------------------------------------------------------


def test_the_same_content_written_differently_has_the_same_fingerprint() -> None:
    compact = json.dumps(CONTRACT_CREATED, separators=(",", ":"))
    spaced = json.dumps(dict(reversed(CONTRACT_CREATED.items())), indent=4)

    assert fingerprint(parse_message(compact)) == fingerprint(parse_message(spaced))


def test_equal_values_spelled_differently_have_the_same_fingerprint() -> None:
    base = fingerprint(parse(USAGE))

    assert fingerprint(parse(changed(USAGE, "quantity", "500.00"))) == base
    assert fingerprint(parse(changed(USAGE, "occurred_at", "2026-11-03T11:00:00+01:00"))) == base
    assert fingerprint(parse(changed(USAGE, "contract_id", None))) == base  # the default


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("quantity", "501"),
        ("occurred_at", "2026-11-03T10:00:01Z"),
        ("properties.region", "us"),
        ("contract_id", "ct_1"),
        ("note", "an extra field"),
        ("id", "evt-124"),
    ],
)
def test_any_other_value_changes_the_fingerprint(path: str, value: Any) -> None:
    assert fingerprint(parse(changed(USAGE, path, value))) != fingerprint(parse(USAGE))


@pytest.mark.parametrize(
    "usage",
    [
        USAGE,
        {**USAGE, "contract_id": "ct_\u00e9\"1", "quantity": "0.00120"},
        {**USAGE, "properties": {"z": [1, 2.5, None, {"b": True, "a": "\u2603"}], "a": -3}},
        {**USAGE, "occurred_at": "2026-11-03T10:00:00.000250-03:30", "properties": {}},
        {**USAGE, "properties": {"b": "x", "a": "\u00ff", "\u00e9": "\"q\"", "k": "\n"}},
        {**USAGE, "customer_id": "\u00e9<tab>", "metric": "m\\n", "quantity": "1000"},
        {**USAGE, "properties": {"\u00e9\"k": "v\u2603\n\\"}},
        {**USAGE, "properties": {"n": 5}},
        {**USAGE, "properties": {"b": True}},
    ],
)
def test_usage_fingerprints_are_the_generic_canonical_form(usage: dict[str, Any]) -> None:
    # Usage has a hand-written canonical form (the hot path); it must stay byte for byte
    # what the generic form gives, so stored fingerprints keep matching.
    from hashlib import sha256

    from consumers.messages.parse import _CANONICAL_JSON

    message = parse(usage)
    generic = sha256(_CANONICAL_JSON.encode(message.model_dump()).encode()).hexdigest()
    assert fingerprint(message) == generic


def test_a_fingerprint_is_a_sha256_hex_digest() -> None:
    digest = fingerprint(parse(USAGE))

    assert len(digest) == 64 and int(digest, 16) >= 0


def test_a_payment_in_fractions_of_the_minor_unit_is_rejected() -> None:
    payment = (b'{"type": "payment.received", "id": "p-1", "occurred_at": "2026-11-03T10:00:00Z",'
               b' "invoice_number": "INV-000001", "amount": "%s", "currency": "%s"}')
    with pytest.raises(MessageRejected, match="more than 2 decimal places"):
        parse_message(payment % (b"10.001", b"USD"))
    for amount, currency in [(b"10.100", b"USD"), (b"10.125", b"KWD")]:
        accepted = parse_message(payment % (amount, currency))
        assert isinstance(accepted, PaymentReceived)
        assert str(accepted.amount) == amount.decode()


@given(st.dictionaries(st.text(), st.text() | st.integers() | st.booleans() | st.none(),
                       max_size=3))
def test_canonical_properties_are_the_generic_canonical_form(properties: dict[str, Any]) -> None:
    # One string property is written out by hand (the hot path): the same text as the encoder.
    from consumers.messages.parse import _CANONICAL_JSON, canonical_properties

    assert canonical_properties(properties) == _CANONICAL_JSON.encode(properties)
