"""A sample book: seeded, deterministic JSON Lines messages (contract.md §1) of every kind.

`generate` yields the book line by line, contract by contract, holding one contract's usage at
a time, so a bench can write 100,000 contracts and millions of usage events in constant memory.
The same arguments give the same bytes, and contract i does not depend on how many follow it.

The book is the world as it stands on the cycle date D (default 2026-12-01): contracts that
started in the two months before D, their usage from their start to D (`events` a month per
usage contract), watermarks, and a little of what goes wrong in production: duplicates, one
metric whose watermark lags (its contracts are held) and six bad messages, each marked with a
`sample_bad` field that says what is wrong with it.
Messages are also split by when they arrived: `part="before"` is what had arrived by the run of
the previous cycle date (D - 1 month), `part="after"` the rest (usage of the last month, late
usage, amendments, terminations, ...). Billing the previous cycle between the two parts gives
the next run something to prorate and to bill late.

    python -m infra.sample_book --contracts 240 --seed 1 --out book.jsonl
    python -m infra.sample_book --contracts 240 --kafka 127.0.0.1:59092   # onto the topics
"""

from __future__ import annotations

import argparse
import calendar
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from domain.calendar import boundary, period_containing
from domain.money import format_money, round_money
from domain.terms import BillingFrequency

DEFAULT_CONTRACTS = 240
DEFAULT_SEED = 1
DEFAULT_CYCLE_DATE = date(2026, 12, 1)
DEFAULT_EVENTS = 40  # usage events per usage contract per month of service

Part = Literal["all", "before", "after"]
PARTS: tuple[Part, ...] = ("all", "before", "after")

# What one unit of each currency is worth in prices, roughly: amounts look like real ones.
CURRENCIES = {
    "USD": Decimal(1), "EUR": Decimal("0.92"), "GBP": Decimal("0.79"),
    "JPY": Decimal(150), "KWD": Decimal("0.307"),
}
TIMEZONES = ("UTC", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "Europe/Berlin")

LAGGING_METRIC = "gpu_minutes"  # its watermark stops 3 days before D: its invoices are held
UNWATERMARKED_METRIC = "sms"  # never gets a watermark: complete at period end
WATERMARK_SOURCE = "metering"

Message = dict[str, Any]
Progress = Callable[[int, int], None]  # (contracts generated, contracts in the book)

_MONTH_SECONDS = 30 * 86400


def generate(
    contracts: int = DEFAULT_CONTRACTS,
    seed: int = DEFAULT_SEED,
    cycle_date: date = DEFAULT_CYCLE_DATE,
    events: int = DEFAULT_EVENTS,
    part: Part = "all",
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The book's lines (each ending in a newline); `part` picks by arrival (module doc)."""
    book = Book(contracts, seed, cycle_date, events)
    wanted = {"all": (False, True), "before": (False,), "after": (True,)}[part]
    for arrives_after, message in book.messages(progress):
        if arrives_after in wanted:
            yield message if isinstance(message, bytes) else json_line(message)


def write(
    path: str | Path,
    contracts: int = DEFAULT_CONTRACTS,
    seed: int = DEFAULT_SEED,
    cycle_date: date = DEFAULT_CYCLE_DATE,
    events: int = DEFAULT_EVENTS,
    part: Part = "all",
) -> int:
    """Write the book to `path` as JSON Lines; the number of lines written."""
    count = 0
    with open(path, "wb") as out:
        for line in generate(contracts, seed, cycle_date, events, part):
            out.write(line)
            count += 1
    return count


def produce(lines: Iterator[bytes], bootstrap: str) -> dict[str, int]:
    """Put the book on Kafka's inbound topics as producers would (docs/kafka.md): contracts,
    amendments and milestones on the contracts topic keyed by contract_id, the rest (usage,
    watermarks, the line that is not JSON) on the usage topic keyed by customer_id; topic
    names from BILLCYCLE_TOPIC_CONTRACTS and BILLCYCLE_TOPIC_USAGE, as `billcycle consume`
    reads them. How many records each topic was given."""
    from kafka import KafkaProducer

    from infra.cli_kafka import topics_from_env

    inbound = topics_from_env()
    topics = {"contracts": inbound.contracts, "usage": inbound.usage}
    sent = dict.fromkeys(topics.values(), 0)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    try:
        futures = []
        for line in lines:
            name, key = _route(line)
            futures.append(producer.send(topics[name], key=key, value=line.rstrip(b"\n")))
            sent[topics[name]] += 1
        producer.flush()
        for future in futures:
            future.get(timeout=60)  # raises what the broker refused
    finally:
        producer.close()
    return sent


def _route(line: bytes) -> tuple[str, bytes | None]:
    """The inbound topic of a line of the book, and its record key."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        return "usage", None
    if str(message.get("type", "")).startswith(("contract.", "milestone.")):
        return "contracts", str(message["contract_id"]).encode()
    customer = message.get("customer_id")
    return "usage", str(customer).encode() if customer is not None else None


def previous_cycle_date(cycle_date: date) -> date:
    """The cycle date a month before: `part="before"` is what had arrived by its run."""
    return boundary(cycle_date, BillingFrequency.MONTHLY, -1)


# Built once: json.dumps with options builds an encoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"))


def json_line(message: Message) -> bytes:
    return _JSON.encode(message).encode() + b"\n"


def _stamp(instant: datetime) -> str:
    """RFC 3339 in UTC to the second: "2026-11-03T10:00:00Z"."""
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _plain(value: Decimal) -> str:
    """A decimal string without exponent or trailing zeros: "0.002", "1500"."""
    return format(value.normalize(), "f")


# --- metrics: what their events carry -------------------------------------------------------


@dataclass(frozen=True)
class _Metric:
    name: str
    aggregation: str = "sum"
    unique_property: str | None = None


API_CALLS = _Metric("api_calls")
STORAGE = _Metric("storage_gb_hours")
EMAILS = _Metric("emails_sent")
SMS = _Metric(UNWATERMARKED_METRIC)
ACTIVE_USERS = _Metric("active_users", "unique_count", "user_id")
PEAK_SEATS = _Metric("concurrent_seats", "max")
GPU = _Metric(LAGGING_METRIC)
METRICS = (API_CALLS, STORAGE, EMAILS, SMS, ACTIVE_USERS, PEAK_SEATS, GPU)


def _quantity(metric: _Metric, rng: random.Random, scale: int) -> tuple[str, dict[str, Any]]:
    """One event's quantity and properties; `scale` makes a customer a light or heavy user."""
    if metric is ACTIVE_USERS:
        return "1", {"user_id": f"user-{rng.randrange(8 * scale)}"}
    if metric is PEAK_SEATS:
        return str(rng.randint(2, 6) * scale), {}
    if metric is STORAGE:
        return f"{rng.uniform(0.5, 4.0) * scale:.3f}", {}
    if metric is GPU:
        return _plain(Decimal(rng.randint(1, 40 * scale)) / 4), {}
    if metric is SMS:
        return str(rng.randint(1, 12 * scale)), {"country": rng.choice(("US", "DE", "JP", "IN"))}
    if metric is EMAILS:
        return str(rng.randint(10, 120) * scale), {}
    return str(rng.randint(20, 400) * scale), {"endpoint": rng.choice(("/v1/search", "/v1/items"))}


# --- one contract ---------------------------------------------------------------------------


@dataclass
class _Meter:
    metric: _Metric
    scale: int


@dataclass
class ContractDraft:
    """One contract of the book being drawn: its terms and what happens to it."""

    rng: random.Random
    index: int
    ids: str  # zero-padded index
    cycle: date  # D
    previous: date  # D - 1 month
    currency: str = ""
    timezone: str = ""
    start: date = date.min
    frequency: str = "monthly"
    anchor: date | None = None
    threshold: Decimal | None = None
    components: list[Message] = field(default_factory=list)
    events: list[tuple[date, Message]] = field(default_factory=list)  # (occurs, message)
    meters: list[_Meter] = field(default_factory=list)
    late_usage: bool = False

    @property
    def contract_id(self) -> str:
        return f"ct_{self.ids}"

    @property
    def customer_id(self) -> str:
        return f"cus_{self.ids}"

    # --- drawing terms ----------------------------------------------------------------------

    def day_between(self, first: date, last: date) -> date:
        """A day from first to last (first, when last comes before it)."""
        return first + timedelta(days=self.rng.randint(0, max(0, (last - first).days)))

    def cycle_day(self, months_before: int) -> date:
        """The monthly boundary of D's day this many months before D."""
        return boundary(self.cycle, BillingFrequency.MONTHLY, -months_before)

    def any_start(self) -> date:
        """A start in the two months before D, on a boundary of D's day half of the time."""
        if self.rng.random() < 0.5:
            return self.cycle_day(self.rng.choice((1, 2)))
        return self.day_between(self.cycle_day(2), self.cycle - timedelta(days=3))

    def money(self, base: str) -> str:
        scaled = Decimal(base) * CURRENCIES[self.currency]
        return format_money(round_money(scaled, self.currency), self.currency)

    def unit(self, base: str) -> str:
        return _plain(Decimal(base) * CURRENCIES[self.currency])

    def subscription(self, cid: str, base: str, quantity: int = 1,
                     timing: str = "in_advance") -> Message:
        return {"id": cid, "kind": "subscription", "amount": self.money(base),
                "quantity": str(quantity), "billing_timing": timing}

    def usage(self, cid: str, metric: _Metric, pricing: Message, scale: int,
              minimum: str | None = None) -> Message:
        self.meters.append(_Meter(metric, scale))
        component: Message = {"id": cid, "kind": "usage", "metric": metric.name,
                              "aggregation": metric.aggregation, "pricing": pricing}
        if metric.unique_property:
            component["unique_property"] = metric.unique_property
        if minimum is not None:
            component["minimum_amount"] = self.money(minimum)
        return component

    def tiers(self, *tiers: tuple[str | None, str, str]) -> list[Message]:
        return [{"up_to": up_to, "unit_amount": self.unit(unit), "flat_amount": self.money(flat)}
                for up_to, unit, flat in tiers]

    def api_pricing(self) -> Message:
        return {"model": "graduated", "tiers": self.tiers(
            ("10000", "0", "0"), ("1000000", "0.002", "0"), (None, "0.0015", "0"))}

    def milestone(self, cid: str, name: str, base: str) -> Message:
        return {"id": cid, "kind": "milestone", "milestone": name, "amount": self.money(base)}

    # --- what happens to it -----------------------------------------------------------------

    def at(self, day: date) -> str:
        """A working-hours moment of `day` in the contract's timezone, as a UTC timestamp."""
        moment = time(self.rng.randint(8, 18), self.rng.randint(0, 59))
        return _stamp(datetime.combine(day, moment, ZoneInfo(self.timezone)))

    def happens(self, day: date, message: Message) -> None:
        self.events.append((day, message))

    def complete_milestone(self, name: str, on: date) -> None:
        self.happens(on, {"type": "milestone.completed", "id": f"{self.contract_id}/{name}",
                          "occurred_at": self.at(on), "contract_id": self.contract_id,
                          "milestone": name, "completed_on": on.isoformat()})

    def amend(self, effective: date, components: list[Message]) -> None:
        sent = max(effective - timedelta(days=self.rng.randint(0, 4)), self.previous)
        self.happens(sent, {"type": "contract.amended", "id": f"{self.contract_id}/amended",
                            "occurred_at": self.at(sent), "contract_id": self.contract_id,
                            "effective_date": effective.isoformat(), "components": components})

    def terminate(self, sent: date, end: date) -> None:
        self.happens(sent, {"type": "contract.terminated",
                            "id": f"{self.contract_id}/terminated", "occurred_at": self.at(sent),
                            "contract_id": self.contract_id, "end_date": end.isoformat()})

    def created(self) -> tuple[date, Message]:
        sent = self.start - timedelta(days=self.rng.randint(2, 20))
        message: Message = {
            "type": "contract.created", "id": f"{self.contract_id}/created",
            "occurred_at": self.at(sent), "contract_id": self.contract_id,
            "customer_id": self.customer_id, "currency": self.currency,
            "start_date": self.start.isoformat(), "end_date": None, "timezone": self.timezone,
            "billing_frequency": self.frequency,
            "billing_anchor_date": (self.anchor or self.start).isoformat(),
            "payment_terms_days": self.rng.choice((14, 30, 30, 45)),
            "usage_threshold_amount": None if self.threshold is None else str(self.threshold),
            "components": self.components,
        }
        return sent, message


Kind = Callable[[ContractDraft], None]  # draws one kind of contract's terms and events


# --- the kinds of contract ------------------------------------------------------------------
# Each draws one contract of its kind: terms, and the milestones, amendments and terminations
# that happen to it. Usage follows from its usage components.


def _hybrid(c: ContractDraft) -> None:
    """Platform fee in advance plus graduated API usage; some send late usage."""
    c.start = c.any_start()
    c.components = [c.subscription("platform", c.rng.choice(("500", "1000", "2500"))),
                    c.usage("api", API_CALLS, c.api_pricing(), c.rng.choice((1, 2, 5)))]
    c.late_usage = c.start == c.cycle_day(2) and c.rng.random() < 0.4


def _per_unit(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.usage("storage", STORAGE, {"model": "per_unit", "unit_amount":
                                                 c.unit("0.08")}, c.rng.choice((2, 10, 40)))]


def _volume(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.usage("email", EMAILS, {"model": "volume", "tiers": c.tiers(
        ("10000", "0.001", "0"), ("100000", "0.0008", "5"), (None, "0.0006", "20"))},
        c.rng.choice((1, 3, 8)))]


def _package(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.usage("sms", SMS, {"model": "package", "package_size": "100",
                                         "package_amount": c.money("4.50")}, c.rng.choice((1, 4)))]


def _unique_users(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.usage("users", ACTIVE_USERS, {"model": "per_unit", "unit_amount":
                                                    c.unit("6")}, c.rng.choice((2, 5)))]


def _peak_seats(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.usage("seats", PEAK_SEATS, {"model": "per_unit", "unit_amount":
                                                  c.unit("15")}, c.rng.choice((2, 5)))]


def _annual(c: ContractDraft) -> None:
    """Annual prepaid licence; one in three is terminated early (a credit note)."""
    c.start = c.any_start()
    c.frequency = "annual"
    c.components = [c.subscription("licence", c.rng.choice(("12000", "36000", "60000")))]
    if c.start < c.previous and c.rng.random() < 0.35:
        sent = c.day_between(c.previous + timedelta(days=2), c.cycle - timedelta(days=10))
        c.terminate(sent, c.day_between(sent + timedelta(days=1), c.cycle - timedelta(days=1)))


def _quarterly(c: ContractDraft) -> None:
    c.start = c.cycle_day(c.rng.choice((1, 2)))
    c.frequency = "quarterly"
    c.components = [c.subscription("platform", "3000"),
                    c.usage("api", API_CALLS, c.api_pricing(), c.rng.choice((1, 3)))]


def _in_arrears(c: ContractDraft) -> None:
    c.start = c.any_start()
    c.components = [c.subscription("platform", "300"),
                    c.subscription("support", c.rng.choice(("400", "800")), timing="in_arrears")]


def _minimum(c: ContractDraft) -> None:
    """Usage with a monthly minimum commitment: light users get a true-up."""
    c.start = c.any_start()
    c.components = [c.usage("api", API_CALLS, {"model": "per_unit", "unit_amount":
                                               c.unit("0.002")}, c.rng.choice((1, 20)), "150")]


def _milestones(c: ContractDraft) -> None:
    """A retainer with implementation milestones: some completed, acceptance never (yet)."""
    c.start = c.cycle_day(2) + timedelta(days=c.rng.randint(0, 20))
    c.components = [c.subscription("retainer", "1000"), c.milestone("kickoff", "kickoff", "2000"),
                    c.milestone("golive", "go_live", "8000"),
                    c.milestone("acceptance", "acceptance", "4000")]
    c.complete_milestone("kickoff", c.start + timedelta(days=c.rng.randint(0, 5)))
    if c.rng.random() < 0.6:
        c.complete_milestone("go_live", c.day_between(c.previous, c.cycle - timedelta(days=1)))


def _services_only(c: ContractDraft) -> None:
    """Milestones only: nothing is due until one completes."""
    c.start = c.any_start()
    c.components = [c.milestone("design", "design", "6000"),
                    c.milestone("build", "build", "15000")]
    if c.start < c.previous and c.rng.random() < 0.5:
        c.complete_milestone("design", c.day_between(c.start, c.previous - timedelta(days=1)))


def _threshold(c: ContractDraft) -> None:
    """Mid-month anchor and heavy usage: progressive billing in the open period."""
    c.start = c.cycle_day(2) + timedelta(days=14)
    c.threshold = Decimal(c.money("400"))
    c.components = [c.usage("api", API_CALLS, {"model": "per_unit", "unit_amount":
                                               c.unit("0.003")}, c.rng.choice((20, 40)))]


def _month_end(c: ContractDraft) -> None:
    """Anchored on the 31st: periods end on the last day of shorter months."""
    first = c.cycle_day(2)
    month = first if calendar.monthrange(first.year, first.month)[1] == 31 else (
        first.replace(day=1) + timedelta(days=31))  # a month of 30 days or fewer: the next one
    c.start = month.replace(day=31)
    c.anchor = c.start
    c.components = [c.subscription("platform", "750"),
                    c.usage("storage", STORAGE, {"model": "per_unit", "unit_amount":
                                                 c.unit("0.08")}, 10)]


def _amended(c: ContractDraft) -> None:
    """Seats changed mid-period: proration credit and charge on the next invoice. One in three
    also leaves the API plan while its integration still sends api_calls: that period's usage
    is priced by no terms at its end, so each run names it as unbilled."""
    c.start = c.cycle_day(2) + timedelta(days=c.rng.choice((0, 0, 9, 14, 19)))
    seats = c.rng.randint(5, 20)
    c.components = [c.subscription("seats", "40", seats),
                    c.usage("api", API_CALLS, c.api_pricing(), 2)]
    # Within the period the previous run billed in advance, after that run.
    billed = period_containing(c.start, BillingFrequency.MONTHLY, c.previous)
    effective = c.day_between(c.previous + timedelta(days=3), billed.end - timedelta(days=3))
    more = max(1, seats + c.rng.choice((-4, 5, 10)))
    leaves_api = (c.index // len(KINDS)) % 3 == 1
    c.amend(effective, [c.subscription("seats", "40", more),
                        *(() if leaves_api else (c.components[1],))])


def _terminated(c: ContractDraft) -> None:
    """Terminated during the month: a credit for the days already billed after the end."""
    c.start = c.cycle_day(2) + timedelta(days=c.rng.choice((0, 0, 5, 10)))
    c.components = [c.subscription("platform", "1200"),
                    c.usage("api", API_CALLS, c.api_pricing(), 1)]
    sent = c.day_between(c.previous + timedelta(days=2), c.cycle - timedelta(days=12))
    c.terminate(sent, c.day_between(sent + timedelta(days=1), c.cycle + timedelta(days=20)))


def _gpu(c: ContractDraft) -> None:
    """GPU usage, whose watermark lags: held until the producer catches up."""
    c.start = c.cycle_day(c.rng.choice((1, 2)))
    c.components = [c.subscription("cluster", "2000"),
                    c.usage("gpu", GPU, {"model": "per_unit", "unit_amount": c.unit("0.9")}, 3)]


# A rotation rather than a lottery: every kind appears in any book of 20 contracts or more.
KINDS: tuple[Kind, ...] = (
    _hybrid, _per_unit, _annual, _volume, _amended, _package, _quarterly, _unique_users,
    _in_arrears, _minimum, _hybrid, _peak_seats, _milestones, _threshold, _month_end,
    _terminated, _hybrid, _gpu, _services_only, _hybrid,
)


# --- the book -------------------------------------------------------------------------------


class Book:
    """A seeded book, streamed: each contract drawn by a kind from `kinds`, in rotation.

    `salt` seeds each contract's draws (with the seed and its index), so books made of other
    kinds (bench/book.py) draw independently of the sample book.
    """

    def __init__(
        self, contracts: int, seed: int, cycle_date: date, events: int,
        kinds: Sequence[Kind] | None = None, salt: str = "billcycle-sample",
    ) -> None:
        if contracts < 1:
            raise ValueError(f"contracts {contracts}: a book needs at least 1 contract")
        if events < 0:
            raise ValueError(f"events {events}: events per contract must be >= 0")
        self.contracts = contracts
        self.seed = seed
        self.cycle = cycle_date
        self.previous = previous_cycle_date(cycle_date)
        self.events = events
        self.kinds = tuple(kinds or KINDS)
        self.salt = salt
        self.width = max(4, len(str(contracts - 1)))
        # The bad messages go after contracts spread over the book.
        self.bad_after: dict[int, list[Message | bytes]] = {}
        bad = _bad_messages(self.previous, cycle_date, f"cus_{0:0{self.width}d}")
        for k, message in enumerate(bad, start=1):
            self.bad_after.setdefault(max(0, contracts * k // len(bad) - 1), []).append(message)
        self.last_usage: Message | None = None

    def messages(self, progress: Progress | None) -> Iterator[tuple[bool, Message | bytes]]:
        """(arrives after the previous run, message) for the whole book, in stream order."""
        first_created: Message | None = None
        for index in range(self.contracts):
            contract = self._draw(index)
            sent, created = contract.created()
            first_created = first_created or created
            yield sent >= self.previous, created
            for day, message in sorted(contract.events, key=lambda e: e[0]):
                yield day >= self.previous, message
            yield from self._usage(contract)
            for bad in self.bad_after.get(index, ()):
                yield True, bad
            if index == self.contracts // 2:
                # The same contract.created again, keys in another order: same content.
                yield True, dict(reversed(list(first_created.items())))
            if progress:
                progress(index + 1, self.contracts)
        if self.last_usage is not None:
            yield True, {**self.last_usage, "quantity": "999999",
                         "sample_bad": "conflicting duplicate: same id, different quantity"}
        yield from self._watermarks()

    def _draw(self, index: int) -> ContractDraft:
        rng = random.Random(f"{self.salt}/{self.seed}/{index}")
        contract = ContractDraft(rng, index, f"{index:0{self.width}d}", self.cycle, self.previous)
        contract.currency = rng.choice(tuple(CURRENCIES))
        contract.timezone = rng.choice(TIMEZONES)
        self.kinds[index % len(self.kinds)](contract)
        return contract

    def _usage(self, c: ContractDraft) -> Iterator[tuple[bool, Message | bytes]]:
        """Usage from the start to D, `events` a month; duplicates and late usage among it."""
        if not c.meters or not self.events:
            return
        zone = ZoneInfo(c.timezone)
        start, cut, end = (datetime.combine(day, time(), zone).astimezone(UTC)
                           for day in (c.start, self.previous, self.cycle))
        seconds = int((end - start).total_seconds())
        count = max(1, round(self.events * seconds / _MONTH_SECONDS / len(c.meters)))
        for m, meter in enumerate(c.meters):
            for n, offset in enumerate(sorted(c.rng.randrange(seconds) for _ in range(count))):
                moment = start + timedelta(seconds=offset)
                message = self._event(c, meter, f"{m}-{n:05d}", moment, meter.scale)
                line = json_line(message)
                arrives_after = moment >= cut
                yield arrives_after, line
                if arrives_after:
                    self.last_usage = message
                    if c.index % 7 == 0 and n == count - 1:
                        yield True, line  # resent by the producer: the same bytes again
            if c.late_usage:
                # Usage of the period billed by the previous run, arriving after that run.
                for n in range(3):
                    moment = cut - timedelta(days=c.rng.randint(1, 6), hours=c.rng.randint(1, 9))
                    yield True, self._event(c, meter, f"{m}-late{n}", moment, 20 * meter.scale)

    def _event(
        self, c: ContractDraft, meter: _Meter, suffix: str, moment: datetime, scale: int
    ) -> Message:
        quantity, properties = _quantity(meter.metric, c.rng, scale)
        return {"type": "usage", "id": f"evt-{c.ids}-{suffix}", "occurred_at": _stamp(moment),
                "customer_id": c.customer_id, "metric": meter.metric.name,
                "quantity": quantity, "properties": properties}

    def _watermarks(self) -> Iterator[tuple[bool, Message]]:
        # Noon UTC of a day is past local midnight of that day in every zone of the book.
        before = datetime.combine(self.previous, time(12), UTC)
        after = datetime.combine(self.cycle, time(12), UTC)
        lagging = datetime.combine(self.cycle - timedelta(days=3), time(), UTC)
        for arrives_after, through in ((False, before), (True, after)):
            for metric in METRICS:
                if metric is SMS:
                    continue
                mark = lagging if arrives_after and metric is GPU else through
                yield arrives_after, {
                    "type": "usage.watermark", "id": f"wm-{metric.name}-{_stamp(mark)}",
                    "occurred_at": _stamp(through + timedelta(minutes=5)),
                    "metric": metric.name, "complete_through": _stamp(mark),
                    "source": WATERMARK_SOURCE,
                }


def _bad_messages(previous: date, cycle: date, customer_id: str) -> list[Message | bytes]:
    """Five of the six bad messages, each saying in `sample_bad` what is wrong with it.

    The sixth, a conflicting duplicate, reuses the id of a usage event and so ends the book.
    """
    at = _stamp(datetime.combine(previous + timedelta(days=1), time(9), UTC))
    created: Message = {"type": "contract.created", "occurred_at": at, "customer_id": "cus_bad",
                        "start_date": previous.isoformat(), "billing_frequency": "monthly"}
    descending = [{"up_to": "100000", "unit_amount": "0.001"},
                  {"up_to": "10000", "unit_amount": "0.002"},
                  {"up_to": None, "unit_amount": "0.0005"}]
    platform = {"id": "platform", "kind": "subscription", "amount": "99"}
    return [
        b'{"sample_bad": "not JSON: the line is cut short", "type": "usage", '
        b'"id": "bad-truncated", "quantity": \n',
        {"type": "usage", "id": "bad-negative-quantity", "occurred_at": at,
         "sample_bad": "negative quantity", "customer_id": customer_id,
         "metric": API_CALLS.name, "quantity": "-25"},
        {**created, "id": "bad-unknown-currency", "sample_bad": "unknown currency",
         "contract_id": "ct_bad_currency", "currency": "XYZ", "components": [platform]},
        {**created, "id": "bad-tiers-out-of-order", "sample_bad": "tiers out of order",
         "contract_id": "ct_bad_tiers", "currency": "USD",
         "components": [{"id": "api", "kind": "usage", "metric": API_CALLS.name,
                         "pricing": {"model": "graduated", "tiers": descending}}]},
        {"type": "contract.amended", "id": "bad-amend-unknown-contract", "occurred_at": at,
         "sample_bad": "amendment of a contract that does not exist",
         "contract_id": "ct_missing", "effective_date": cycle.isoformat(),
         "components": [platform]},
    ]


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m infra.sample_book`, each stating its default."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.sample_book", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--contracts", type=int, default=DEFAULT_CONTRACTS,
                        help="contracts in the book (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="the same seed gives the same book (default %(default)s)")
    parser.add_argument("--cycle-date", type=date.fromisoformat, default=DEFAULT_CYCLE_DATE,
                        metavar="YYYY-MM-DD",
                        help="usage is for the month before it (default %(default)s)")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS,
                        help="usage events per usage contract per month (default %(default)s)")
    parser.add_argument("--part", choices=PARTS, default="all",
                        help="what arrived before the previous cycle's run, after it, or all "
                        "(default %(default)s)")
    parser.add_argument("--out", default="-", help="file to write; - = stdout (default)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP", default=None,
                        help="put the book on Kafka at HOST:PORT instead (the topics of env "
                        "BILLCYCLE_TOPIC_CONTRACTS and BILLCYCLE_TOPIC_USAGE, default "
                        "billing.contracts and billing.usage); default: write it to --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    from infra.cli import UserError

    args = build_parser().parse_args(argv)
    try:
        if args.kafka:
            book = generate(args.contracts, args.seed, args.cycle_date, args.events, args.part)
            for topic, count in produce(book, args.kafka).items():
                print(f"{count} records put on {topic}", file=sys.stderr)
        elif args.out == "-":
            sys.stdout.buffer.writelines(generate(args.contracts, args.seed, args.cycle_date,
                                                  args.events, args.part))
        else:
            lines = write(args.out, args.contracts, args.seed, args.cycle_date, args.events,
                          args.part)
            print(f"{lines} lines written to {args.out}", file=sys.stderr)
    except ValueError as exc:
        print(f"sample_book: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:  # a topic name refused as `billcycle consume` refuses it
        print(f"sample_book: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
