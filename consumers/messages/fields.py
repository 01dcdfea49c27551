"""Field types of the inbound messages: decimal strings, dates, timestamps, codes, names.

Each type checks one JSON value, and its error message says what was wrong and how to write it
instead, worded to follow the field's path: `quantity` + ` "-3" is negative; it must be >= 0`.
pydantic's own decimal, date and datetime types are too lenient for a contract with producers in
other languages (they take JSON numbers, "1e3", " 12 ", Unix times), hence the validators here.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Annotated, Any, get_args
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain.money import (
    MAX_FRACTION_DIGITS,
    MAX_INTEGER_DIGITS,
    digits_beyond_range,
    is_known_currency,
)
from domain.reasons import CONTROL


def _null_allowed_in_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    properties = schema.get("properties", {})
    for name in _null_is_default(cls):
        field = cls.model_fields[name]
        key = field.alias or name
        if key in properties:
            was = properties[key]
            described = {k: was.pop(k) for k in ("description", "default", "title")
                         if k in was}
            said = described.get("description")
            described["description"] = f"{said} Null = the default." if said \
                else "Null = the default."
            properties[key] = {"anyOf": [was, {"type": "null"}], **described}


class MessagePart(BaseModel):
    """Base of every inbound model: strict JSON types; unknown fields kept (contract.md §1)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True,
                              json_schema_extra=_null_allowed_in_schema)

    @model_validator(mode="before")
    @classmethod
    def _null_as_absent(cls, data: Any) -> Any:
        """An optional field sent as null takes its default, as if absent: serializers in
        many languages write null for a field not set. Where null has a meaning of its own
        (an amendment's null usage_threshold_amount: no threshold), the field accepts it."""
        if isinstance(data, dict):
            defaulted = _null_is_default(cls)
            if defaulted and any(data.get(name, 0) is None for name in defaulted):
                return {k: v for k, v in data.items() if not (v is None and k in defaulted)}
        return data


@cache
def _null_is_default(cls: type[BaseModel]) -> frozenset[str]:
    """The fields of a model that have a default and do not take null themselves."""
    return frozenset(
        name for name, field in cls.model_fields.items()
        if not field.is_required() and type(None) not in get_args(field.annotation)
    )


def rule_error(kind: str, message: str, at: str = "") -> PydanticCustomError:
    """An error about how values fit together; `at` continues the path (".end_date", "[2].id")."""
    return PydanticCustomError(kind, message, {"at": at})


def _value_error(kind: str, message: str, value: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, {"value": shown(value)})


def shown(value: Any) -> str:
    """A JSON value as the producer wrote it, containers by kind only."""
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 60 else f'"{value[:57]}..."'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "an array" if isinstance(value, list) else "an object"


# --- decimals ---------------------------------------------------------------------------------

# Plain notation only (no exponent, "+", spaces, "_", NaN or Infinity): one way to write a value.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_DECIMAL_EXAMPLE = '"12.5"'


def _decimal(value: Any) -> Decimal:
    if isinstance(value, str):
        if _PLAIN_DECIMAL.fullmatch(value):
            return _in_range(Decimal(value), value)
        raise _value_error(
            "decimal_format",
            "{value} is not a plain decimal; write digits with an optional fraction such as "
            + _DECIMAL_EXAMPLE
            + " (no exponent, spaces, NaN or Infinity)",
            value,
        )
    # From Python code (model_validate(model_dump()), tests): a Decimal is taken as it is.
    if isinstance(value, Decimal) and value.is_finite():
        return value
    kind = ("the JSON boolean {value}" if isinstance(value, bool)
            else "the JSON number {value}" if isinstance(value, int | float) else "{value}")
    raise _value_error(
        "decimal_type", f"must be a decimal string such as {_DECIMAL_EXAMPLE}, not {kind}", value
    )


def _in_range(number: Decimal, value: str) -> Decimal:
    problem = digits_beyond_range(number)
    if problem is not None:
        raise _value_error(
            "decimal_range",
            f"{{value}} {problem}; billcycle takes values below 10^{MAX_INTEGER_DIGITS} with at "
            f"most {MAX_FRACTION_DIGITS} decimal places (is the unit right?)",
            value,
        )
    return number


def _non_negative(value: Any) -> Decimal:
    number = _decimal(value)
    if number.is_signed():  # "-0" too: the schema's pattern has no sign
        if not number:
            raise _value_error("decimal_signed_zero", "{value} has a minus sign; write 0",
                               value)
        raise _value_error("decimal_negative", "{value} is negative; it must be >= 0", value)
    return number


def _positive(value: Any) -> Decimal:
    number = _decimal(value)
    if number <= 0:
        raise _value_error("decimal_not_positive", "{value} is not positive; it must be > 0", value)
    return number


# The schemas' patterns say the range too: digits counted without leading zeros before the
# point and trailing zeros after it, as `digits_beyond_range` counts them.
_INTEGER_DIGITS = f"0*[0-9]{{1,{MAX_INTEGER_DIGITS}}}"
_FRACTION_DIGITS = f"\\.[0-9]{{1,{MAX_FRACTION_DIGITS}}}0*"
_NON_NEGATIVE_PATTERN = f"^{_INTEGER_DIGITS}({_FRACTION_DIGITS})?$"
# Without look-ahead, so that RE2-based validators (Go, Rust) compile it.
_POSITIVE_PATTERN = (
    f"^(0*[1-9][0-9]{{0,{MAX_INTEGER_DIGITS - 1}}}({_FRACTION_DIGITS})?"
    f"|0+\\.[0-9]{{0,{MAX_FRACTION_DIGITS - 1}}}[1-9]0*)$"
)

# Written back as the JSON string it was read from (said explicitly: see _AS_ISO).
_AS_STRING = PlainSerializer(str, return_type=str, when_used="json")

NonNegativeDecimal = Annotated[
    Decimal,
    PlainValidator(_non_negative),
    _AS_STRING,
    WithJsonSchema({"type": "string", "pattern": _NON_NEGATIVE_PATTERN, "examples": ["12.5"]}),
]
"""A JSON string holding a decimal >= 0, e.g. "0.002"."""

PositiveDecimal = Annotated[
    Decimal,
    PlainValidator(_positive),
    _AS_STRING,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _POSITIVE_PATTERN,
            "examples": ["12.5"],
        }
    ),
]
"""A JSON string holding a decimal > 0."""

# --- dates and timestamps ---------------------------------------------------------------------

_DATE_SYNTAX = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIME_SYNTAX = r"[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
_OFFSET_SYNTAX = "([Zz]|[+-][0-9]{2}:[0-9]{2})"
_DATE = re.compile(_DATE_SYNTAX)
# RFC 3339 section 5.6. The offset is optional here only so that its absence can be named.
_TIMESTAMP = re.compile(f"{_DATE_SYNTAX}{_TIME_SYNTAX}(?P<offset>{_OFFSET_SYNTAX})?")
# The schemas carry the same syntax as patterns: validators often skip "format".
_DATE_SCHEMA = {"type": "string", "format": "date", "pattern": f"^{_DATE_SYNTAX}$"}
_TIMESTAMP_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": f"^{_DATE_SYNTAX}{_TIME_SYNTAX}{_OFFSET_SYNTAX}$",
}
_DATE_EXAMPLE = '"2026-10-01"'
# The calendar a contract lives in: a year outside it is a typo ("0026-10-01" would bill two
# thousand years of subscription on the next run), not a contract.
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(2999, 12, 31)
_DAY_SCHEMA = {**_DATE_SCHEMA, "pattern": "^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}$"}
_TIMESTAMP_EXAMPLE = '"2026-11-03T10:00:00Z"'


def _day(value: Any) -> date:
    if type(value) is date:  # from Python code, as with Decimals above
        return value
    if not isinstance(value, str):
        raise _value_error(
            "date_type", f"must be a date YYYY-MM-DD such as {_DATE_EXAMPLE}, not {{value}}", value
        )
    if not _DATE.fullmatch(value):
        raise _value_error(
            "date_format",
            f"{{value}} is not a date; write YYYY-MM-DD such as {_DATE_EXAMPLE}",
            value,
        )
    try:
        day = date.fromisoformat(value)
    except ValueError as error:
        raise _value_error(
            "date_invalid", f"{{value}} is not a real date ({error})", value
        ) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise _value_error(
            "date_range",
            f"{{value}} is outside the years {FIRST_DAY.year} to {LAST_DAY.year}; check the "
            "year",
            value,
        )
    return day


def utc_timestamp(value: str) -> tuple[datetime, str] | None:
    """The instant and its `isoformat()` of a UTC timestamp written the common way, or None.

    "2026-11-03T10:00:00Z" or "...+00:00", with no fraction or one of six digits (not all
    zero): the form `isoformat` writes, so its text is the input's with "+00:00" for "Z".
    Nearly every timestamp producers send: one regex and fromisoformat on the text itself,
    where the full check below costs a second regex, upper(), astimezone() and isoformat()
    (3 us, per message). Anything else (other offsets, fractions, "t", "z", hour 24, errors)
    is None and goes the full way, which reads these the same.
    """
    match = _COMMON_UTC.fullmatch(value)
    if match is None:
        return None
    try:
        at = datetime.fromisoformat(value)  # what the full way reads: upper() changes nothing
    except ValueError:  # not a real date or time: the full way says so
        return None
    return at, (value[:-1] + "+00:00" if match.group(1) == "Z" else value)


# A subset of _TIMESTAMP: years 1900 to 2999, upper-case T and Z, six-digit fractions other
# than zero (isoformat leaves a zero fraction out), hours below 24.
_COMMON_UTC = re.compile(
    "(?:19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}"
    r"(?:\.(?!000000)[0-9]{6})?(Z|\+00:00)"
)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    if type(value) is str:
        common = utc_timestamp(value)
        if common is not None:
            return common[0]
    if not isinstance(value, str):
        raise _value_error(
            "timestamp_type",
            "must be an RFC 3339 timestamp with offset such as "
            + _TIMESTAMP_EXAMPLE
            + ", not {value}",
            value,
        )
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise _value_error(
            "timestamp_format",
            "{value} is not an RFC 3339 timestamp; write one with offset such as "
            + _TIMESTAMP_EXAMPLE,
            value,
        )
    offset = match.group("offset")
    if offset is None:
        raise _value_error(
            "timestamp_offset_missing",
            f"{{value}} has no offset; add one, e.g. {_TIMESTAMP_EXAMPLE}",
            value,
        )
    if offset[0] in "+-" and offset[1:3] > "23":  # "+HH:MM": two digits, by the pattern
        raise _value_error(
            "timestamp_offset_range",
            "{value} has an offset beyond -23:59 to +23:59; check the offset",
            value,
        )
    try:
        # fromisoformat knows neither "t" nor "z"; upper() leaves the digits alone.
        at = datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError as error:
        raise _value_error(
            "timestamp_invalid", f"{{value}} is not a real time ({error})", value
        ) from None
    except OverflowError:  # "0001-01-01T00:00:00+01:00" is in year 0 in UTC
        raise _value_error(
            "timestamp_range",
            "{value} is outside the years 0001 to 9999 once in UTC; check the date and offset",
            value,
        ) from None
    if not FIRST_DAY <= at.date() <= LAST_DAY:
        # A watermark in 3026 would mark its metric complete for a thousand years, and
        # watermarks never move back: a typo, refused like a date's.
        raise _value_error(
            "timestamp_range",
            f"{{value}} is outside the years {FIRST_DAY.year} to {LAST_DAY.year}; check the "
            "year",
            value,
        )
    return at


def _timestamp_or_date(value: Any) -> datetime:
    # A date stands for the instant it begins in UTC: "2026-11-01" = "2026-11-01T00:00:00Z".
    if isinstance(value, str) and _DATE.fullmatch(value):
        return datetime.combine(_day(value), time(), UTC)
    return _timestamp(value)


def _iso(value: date) -> str:
    return value.isoformat().replace("+00:00", "Z")


# Said explicitly: with a PlainValidator, pydantic's inferred JSON serializer warns on dates.
_AS_ISO = PlainSerializer(_iso, return_type=str, when_used="json")

Day = Annotated[
    date,
    PlainValidator(_day),
    _AS_ISO,
    WithJsonSchema({**_DAY_SCHEMA, "examples": ["2026-10-01"]}),
]
"""A calendar date, YYYY-MM-DD, in the years 1900 to 2999."""

Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    _AS_ISO,
    WithJsonSchema({**_TIMESTAMP_SCHEMA, "examples": ["2026-11-03T10:00:00Z"]}),
]
"""An RFC 3339 timestamp with offset, read as an aware datetime in UTC."""

TimestampOrDate = Annotated[
    datetime,
    PlainValidator(_timestamp_or_date),
    _AS_ISO,
    WithJsonSchema(
        {
            "anyOf": [_TIMESTAMP_SCHEMA, _DAY_SCHEMA],
            "examples": ["2026-11-03T10:00:00Z", "2026-11-01"],
        }
    ),
]
"""An RFC 3339 timestamp with offset, or a date YYYY-MM-DD meaning midnight UTC of that date."""

Days = Annotated[int, Strict(), Field(ge=0, le=3650)]
"""A whole number of days, at most ten years, so that due dates stay in the calendar."""

# --- codes and names --------------------------------------------------------------------------


def _known_currency(code: str) -> str:
    if not is_known_currency(code):
        raise _value_error(
            "currency_unknown",
            "{value} is not an ISO 4217 currency code; use one such as USD, EUR or JPY",
            code,
        )
    return code


Currency = Annotated[
    str,
    Strict(),
    AfterValidator(_known_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "examples": ["USD"]}),
]
"""An active ISO 4217 currency code."""


@cache
def _time_zones() -> frozenset[str]:
    # The zone files also hold "localtime" and "posixrules": not IANA names, and they mean
    # something different on each machine.
    return frozenset(available_timezones()) - {"localtime", "posixrules"}


def _known_time_zone(name: str) -> str:
    if name not in _time_zones():
        raise _value_error(
            "timezone_unknown",
            '{value} is not an IANA time zone; use a name such as "UTC" or "Europe/Berlin"',
            name,
        )
    return name


TimeZoneName = Annotated[
    str,
    Strict(),
    AfterValidator(_known_time_zone),
    WithJsonSchema({"type": "string", "minLength": 1, "examples": ["UTC", "Europe/Berlin"]}),
]
"""An IANA time zone name such as "Europe/Berlin"."""



# Ids and names are keys of the store's indexes, whose entries PostgreSQL limits to about
# 2,700 bytes: a longer one stopped a partition's ingest for good. The meters' keys hold four
# names (customer, metric, contract, counted property), so each has at most a fifth of that.
MAX_NAME_LENGTH = 256
MAX_NAME_BYTES = 512


def name_too_long(value: str) -> bool:
    """More than MAX_NAME_LENGTH characters, or more than MAX_NAME_BYTES bytes in UTF-8."""
    # At most 4 bytes a character: a name of 128 characters or fewer needs no encoding.
    return len(value) * 4 > MAX_NAME_BYTES and (
        len(value) > MAX_NAME_LENGTH
        or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES)


def _printable(value: str) -> str:
    """No control characters: PostgreSQL's text columns cannot hold U+0000 (one such id
    stopped a partition's ingest for good), and the others are typos in an id or a name."""
    if name_too_long(value):
        size = len(value.encode("utf-8", "surrogatepass"))
        in_bytes = f", {size} bytes in UTF-8" if size > len(value) else ""
        raise rule_error(
            "name_too_long",
            f"is {len(value)} characters long{in_bytes}; ids, metrics and names have at most "
            f"{MAX_NAME_LENGTH} characters and {MAX_NAME_BYTES} bytes")
    found = CONTROL.search(value)
    if found is not None:
        raise rule_error(
            "control_character",
            f"holds the control character U+{ord(found.group()):04X} at position "
            f"{found.start() + 1}; ids, metrics and names are printable text: check the "
            "producer's encoding")
    return value


Name = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1),
    AfterValidator(_printable),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH,
                    "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}),
]
"""A non-empty string of at most 256 characters, without control characters: ids, metrics,
milestones, property names."""
