"""Money: Decimal amounts, ISO 4217 minor units, and the one rounding rule."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, getcontext

ZERO = Decimal(0)

# The decimals billcycle takes in (quantities, prices, amounts): below 10^15, to at most 12
# decimal places. A line's amount is computed with Decimal's 28 significant digits; values in
# these bounds keep it well inside them for any real book, and a producer's unit mistake (bytes
# for gigabytes, nanoseconds for seconds) is refused at the door instead of failing every run.
MAX_INTEGER_DIGITS = 15
MAX_FRACTION_DIGITS = 12

# ISO 4217 active currencies by their minor units. Anything absent is unknown and rejected.
_CODES_BY_MINOR_UNITS = {
    2: """
        AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP
        BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
        GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT
        LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
        NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP
        SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES
        VED WST XCD XCG YER ZAR ZMW ZWG
    """,
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
_MINOR_UNITS: dict[str, int] = {
    code: units for units, codes in _CODES_BY_MINOR_UNITS.items() for code in codes.split()
}


class UnknownCurrency(ValueError):
    """A currency code that is not an active ISO 4217 code."""


class AmountOutOfRange(ArithmeticError):
    """An amount with more digits than billcycle keeps to the minor unit."""


def digits_beyond_range(value: Decimal) -> str | None:
    """What is out of range in `value` (a finite decimal from a message), or None.

    Digits are counted on the value, so "0012.50" has 2 integer and 1 fraction digits; exactly,
    never through normalize(), which rounds to the context's 28 digits first."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if not any(digits):
        return None
    size = len(digits)
    while exponent < 0 and digits[size - 1] == 0:  # trailing zeros of the fraction
        size -= 1
        exponent += 1
    if size + exponent > MAX_INTEGER_DIGITS:
        return f"has more than {MAX_INTEGER_DIGITS} digits before the decimal point"
    if -exponent > MAX_FRACTION_DIGITS:
        return f"has more than {MAX_FRACTION_DIGITS} digits after the decimal point"
    return None


def is_known_currency(code: str) -> bool:
    return code in _MINOR_UNITS


def minor_units(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    try:
        return _MINOR_UNITS[currency]
    except KeyError:
        raise UnknownCurrency(
            f"unknown currency {currency!r}; use an ISO 4217 code such as USD, EUR or JPY"
        ) from None


# The quantum of each currency's minor unit (USD 0.01, JPY 1, KWD 0.001), made once.
_QUANTA: dict[str, Decimal] = {
    code: Decimal(1).scaleb(-units) for code, units in _MINOR_UNITS.items()
}


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor units: the only place billcycle rounds money."""
    try:
        quantum = _QUANTA[currency]
    except KeyError:
        minor_units(currency)  # raises UnknownCurrency with its explanation
        raise
    try:
        return amount.quantize(quantum, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context's precision: refused, not rounded
        raise AmountOutOfRange(
            f"{amount:.6E} {currency} has more digits than billcycle computes to the minor unit "
            f"({getcontext().prec} significant digits); check the quantities and prices that "
            "make it"
        ) from None


def format_money(amount: Decimal, currency: str) -> str:
    """The amount as a string with exactly the currency's minor units ("1005.00").

    Amounts come here rounded already; one that is not is rounded by round_money (half-up),
    never by the string format (half-even), so that a displayed amount is the rule's."""
    places = minor_units(currency)
    return f"{round_money(amount, currency):.{places}f}"
