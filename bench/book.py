"""The bench book: infra.sample_book's generator with a mix of contracts of 3 to 10 lines each.

The sample book shows every rule once; 40% of its invoices have one line. A month-end run is
mostly contracts with several components, so the billing bench uses this mix instead:

    hybrid      platform and seats in advance, graduated API usage with a monthly minimum
    usage only  four metered components (graduated, per unit, volume, unique users)
    annual      prepaid licence and support, onboarding and training milestones
    milestones  a monthly retainer and three milestones, two or three completed
    quarterly   platform in advance, support in arrears, graduated usage, quarterly

Currencies and timezones are drawn as in the sample book (USD, EUR, GBP, JPY, KWD; UTC to
Asia/Tokyo), so are the duplicates and bad messages; no metric lags, so nothing is held.
Billing every contract once on D (no previous run) gives 3 to 10 lines per invoice.

    .venv/bin/python -m bench.book --contracts 10000 --events 8 --out book.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import date, timedelta

# One generator serves both books (streaming, seeding, duplicates, bad messages, watermarks);
# only the kinds of contract differ.
from infra.sample_book import (
    ACTIVE_USERS,
    API_CALLS,
    DEFAULT_CYCLE_DATE,
    EMAILS,
    STORAGE,
    Book,
    ContractDraft,
    Kind,
    json_line,
)

DEFAULT_SEED = 1
DEFAULT_EVENTS = 8  # usage events per contract per month: meters, not events, drive billing
ONE_WEEK = timedelta(days=7)


def _started(c: ContractDraft) -> date:
    """A start one to two months before D: a usage period has ended by D."""
    return c.day_between(c.cycle_day(2), c.cycle_day(1))


def _hybrid(c: ContractDraft) -> None:
    c.start = _started(c)
    c.components = [
        c.subscription("platform", c.rng.choice(("500", "1000", "2500"))),
        c.subscription("seats", "40", c.rng.randint(5, 50)),
        c.usage("api", API_CALLS, c.api_pricing(), c.rng.choice((1, 2, 5)), "250"),
    ]


def _usage_only(c: ContractDraft) -> None:
    c.start = _started(c)
    c.components = [
        c.usage("api", API_CALLS, c.api_pricing(), c.rng.choice((1, 5))),
        c.usage("storage", STORAGE, {"model": "per_unit", "unit_amount": c.unit("0.08")}, 10),
        c.usage("email", EMAILS, {"model": "volume", "tiers": c.tiers(
            ("10000", "0.001", "0"), ("100000", "0.0008", "5"), (None, "0.0006", "20"))}, 3),
        c.usage("users", ACTIVE_USERS, {"model": "per_unit", "unit_amount": c.unit("6")}, 2),
    ]


def _annual(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.frequency = "annual"
    c.components = [
        c.subscription("licence", c.rng.choice(("12000", "36000", "60000"))),
        c.subscription("support", "4800"),
        c.milestone("onboarding", "onboarding", "3000"),
        c.milestone("training", "training", "1500"),
    ]
    c.complete_milestone("onboarding", c.day_between(c.start, c.cycle - ONE_WEEK))
    c.complete_milestone("training", c.day_between(c.start, c.cycle - ONE_WEEK))


def _milestones(c: ContractDraft) -> None:
    c.start = c.cycle_day(2)
    c.components = [c.subscription("retainer", "1000"),
                    c.milestone("kickoff", "kickoff", "2000"),
                    c.milestone("design", "design", "6000"),
                    c.milestone("golive", "go_live", "8000")]
    c.complete_milestone("kickoff", c.day_between(c.start, c.previous))
    c.complete_milestone("design", c.day_between(c.previous, c.cycle - ONE_WEEK))
    if c.rng.random() < 0.6:
        c.complete_milestone("go_live", c.day_between(c.previous, c.cycle - ONE_WEEK))


def _quarterly(c: ContractDraft) -> None:
    c.start = c.cycle_day(3)
    c.frequency = "quarterly"
    c.components = [c.subscription("platform", "3000"),
                    c.subscription("support", "900", timing="in_arrears"),
                    c.usage("api", API_CALLS, c.api_pricing(), c.rng.choice((1, 3)))]


# Hybrid twice: it is the common case of a SaaS book.
KINDS: tuple[Kind, ...] = (
    _hybrid, _usage_only, _annual, _hybrid, _milestones, _quarterly,
)


def generate(
    contracts: int, seed: int = DEFAULT_SEED, cycle_date: date = DEFAULT_CYCLE_DATE,
    events: int = DEFAULT_EVENTS,
) -> Iterator[bytes]:
    """The book's JSON Lines (each ending in a newline), contract by contract."""
    book = Book(contracts, seed, cycle_date, events, kinds=KINDS, salt="billcycle-bench")
    for _, message in book.messages(None):
        yield message if isinstance(message, bytes) else json_line(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.book",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--contracts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                        help="usage events per contract per month")
    parser.add_argument("--out", default="-", help="file to write; - = stdout (default)")
    args = parser.parse_args(argv)
    lines = generate(args.contracts, args.seed, DEFAULT_CYCLE_DATE, args.events)
    if args.out == "-":
        sys.stdout.buffer.writelines(lines)
    else:
        with open(args.out, "wb") as out:
            out.writelines(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
