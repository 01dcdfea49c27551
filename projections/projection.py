"""The projection base: a library `Projection` whose view takes many events per transaction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from domain.ledger import Document
from domain.money import minor_units, round_money
from domain.recognition import Schedule, schedule_for_line
from projections.persistence import FIRST_RULES, Changes, Table, View

# A domain event and its position in the application's log.
Positioned = tuple[Any, int]


def topics(*event_classes: type[Any]) -> tuple[str, ...]:
    """The stored-event topics of these event classes: what a projection reads from the log."""
    return tuple(get_topic(cls) for cls in event_classes)


def event_class(aggregate: type[Any], name: str) -> type[Any]:
    """An aggregate's event class by name (made by the @event decorator, so unknown to mypy)."""
    found = getattr(aggregate, name)
    assert isinstance(found, type)
    return found


class _Documents:
    """The ledger's `Document` of each InvoiceIssued event, made once per event object.

    The ledger and revenue views both need every line's recognition schedule; the runner
    decodes an event once and hands the same object to both, so the schedules are made once
    too. Keyed by the event's identity (the entry holds the event, so the id stays its own);
    the runner forgets them after each page.
    """

    LIMIT = 50_000  # a bound for callers that never forget (one event at a time)

    def __init__(self) -> None:
        self._made: dict[int, tuple[Any, Document]] = {}
        # Schedules by what they are made of: a book bills the same lines to many contracts
        # (13,301 distinct of 49,942 lines at 10,000 contracts), and a Schedule is immutable,
        # so documents share them. Kept across pages; emptied when full.
        self._schedules: dict[tuple[Any, ...], Schedule] = {}

    def of(self, issued: Any) -> Document:
        found = self._made.get(id(issued))
        if found is not None and found[0] is issued:
            return found[1]
        if len(self._made) >= self.LIMIT:
            self._made.clear()
        cur, day = issued.currency, issued.issue_date
        doc = Document(
            number=issued.number,
            document_type=issued.document_type,
            customer_id=issued.customer_id,
            contract_id=issued.contract_id,
            currency=cur,
            issue_date=day,
            schedules=tuple(self._schedule(line, cur, day) for line in issued.lines),
        )
        self._made[id(issued)] = (issued, doc)
        return doc

    def _schedule(self, line: Any, currency: str, issued_on: date) -> Schedule:
        amount = line["amount"]
        if not isinstance(amount, str):  # equal Decimals may differ in exponent: not shared
            return schedule_for_line(line, currency, issued_on)
        basis = line.get("basis")
        # Everything schedule_for_line reads from the line.
        key = (line["kind"], line["period_start"], line["period_end"], amount,
               basis.get("completed_on") if basis else None, currency, issued_on)
        found = self._schedules.get(key)
        if found is None:
            if len(self._schedules) >= self.LIMIT:
                self._schedules.clear()
            found = self._schedules[key] = schedule_for_line(line, currency, issued_on)
        return found

    def forget(self) -> None:
        self._made.clear()


documents = _Documents()


# to_minor's answers: a replay converts the same few amounts over and over (a book's prices,
# line amounts and their schedules' pieces: 22,000 distinct of 238,000 conversions at 10,000
# contracts), and a dict look-up costs a quarter of the conversion. Keyed by the amount's
# value (equal Decimals hash alike and convert alike) and currency; emptied when full.
_MINOR: dict[tuple[Decimal, str], int] = {}
_MINOR_LIMIT = 100_000


def to_minor(amount: Decimal, currency: str) -> int:
    """An amount as an integer count of the currency's minor units (rounded half-up first)."""
    key = (amount, currency)
    found = _MINOR.get(key)
    if found is None:
        if len(_MINOR) >= _MINOR_LIMIT:
            _MINOR.clear()
        found = _MINOR[key] = _to_minor(amount, currency)
    return found


def _to_minor(amount: Decimal, currency: str) -> int:
    units = amount.scaleb(minor_units(currency))
    whole = int(units)  # toward zero; equal when already in minor units, as most amounts are
    if whole == units:
        return whole
    return int(round_money(amount, currency).scaleb(minor_units(currency)))


def from_minor(units: int, currency: str) -> Decimal:
    return Decimal(units).scaleb(-minor_units(currency))


class ViewProjection(Projection[View], ABC):
    """Turns a batch of events into changes of its view, written with tracking at once.

    Subclasses name their `topics` (so the log is filtered in the database: usage events,
    by far the most numerous, never reach a projection that does not read them) and their
    `tables`.
    """

    tables: ClassVar[tuple[Table, ...]]
    # The version of the rules by which the projection turns events into rows. Raise it in a
    # release that changes the rows written for the same events without changing the
    # tables' columns: views built by the older rules are then dropped when opened and built
    # again from the log (View.drift), as views whose columns changed are.
    rules: ClassVar[int] = FIRST_RULES

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """The library's one-event interface: a batch of one."""
        self.process([(domain_event, tracking.notification_id)], tracking, self.position())

    def position(self) -> int:
        return self.view.position()

    def process(self, events: Sequence[Positioned], tracking: Tracking, after: int) -> None:
        """Apply the events (the log after `after`, through `tracking`) in one transaction."""
        self.view.write(self.changes(events), tracking, after)

    @abstractmethod
    def changes(self, events: Sequence[Positioned]) -> Changes:
        """What the events do to the view; may read the view's current rows."""
