"""Throughput of parse_message and fingerprint on a typical usage line, and of the command
made from it through the models and by the usage fast path: prints messages/s."""

from __future__ import annotations

import timeit
from collections.abc import Callable

from consumers.messages import fingerprint, parse_message
from consumers.messages.usage_fast import usage_command
from consumers.pipeline import to_command

LINE = (
    b'{"type": "usage", "id": "evt-1234567", "occurred_at": "2026-11-03T10:00:00Z", '
    b'"customer_id": "cus_1", "metric": "api_calls", "quantity": "12.5", '
    b'"properties": {"region": "eu-west-1", "endpoint": "/v1/search"}}'
)


def rate(function: Callable[[], object], number: int = 50_000) -> float:
    """Calls per second, from the best of five runs (the least disturbed by other load)."""
    best = min(timeit.repeat(function, number=number, repeat=5))
    return number / best


def main() -> None:
    message = parse_message(LINE)
    print(f"parse_message: {rate(lambda: parse_message(LINE)):,.0f} messages/s")
    print(f"fingerprint:   {rate(lambda: fingerprint(message)):,.0f} messages/s")
    both = rate(lambda: fingerprint(parse_message(LINE)))
    print(f"both:          {both:,.0f} messages/s")
    models = rate(lambda: to_command(parse_message(LINE)))
    print(f"command, models:    {models:,.0f} messages/s")
    print(f"command, fast path: {rate(lambda: usage_command(LINE)):,.0f} messages/s")


if __name__ == "__main__":
    main()
