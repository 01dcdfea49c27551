"""What a contract has been billed: the record every billing decision is reconciled against.

Billing never asks "was this invoiced?" of the invoices; it compares what is owed with this
state and bills the difference. A settlement replaces entries key by key, so applying one twice
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Segment:
    """A stretch of a service period billed (or owed) at one full-period rate."""

    start: date
    end: date
    unit_amount: Decimal
    quantity: Decimal

    @property
    def rate(self) -> Decimal:
        return self.unit_amount * self.quantity


@dataclass(frozen=True)
class UsageBilled:
    """Usage of one component and period billed so far."""

    quantity: Decimal
    amount: Decimal
    through: date  # usage before this local date is billed; the period end once final
    final: bool
    metric: str  # "" in settlements stored before metrics were kept, where no terms name it


PeriodKey = tuple[str, date]  # (component id, start of the full service period)


@dataclass
class BilledState:
    subscriptions: dict[PeriodKey, tuple[Segment, ...]] = field(default_factory=dict)
    usage: dict[PeriodKey, UsageBilled] = field(default_factory=dict)
    true_ups: dict[PeriodKey, Decimal] = field(default_factory=dict)
    milestones: dict[str, Decimal] = field(default_factory=dict)
    usage_revision: int = 0  # log position through which usage was read when last billed
    cycle_date: date | None = None  # the latest cycle date billed (None in older records)

    def apply(self, settlement: BilledState) -> None:
        self.subscriptions.update(settlement.subscriptions)
        self.usage.update(settlement.usage)
        self.true_ups.update(settlement.true_ups)
        self.milestones.update(settlement.milestones)
        self.usage_revision = max(self.usage_revision, settlement.usage_revision)
        if self.cycle_date is None or (
                settlement.cycle_date is not None and settlement.cycle_date > self.cycle_date):
            self.cycle_date = settlement.cycle_date

    def is_empty(self) -> bool:
        return not (self.subscriptions or self.usage or self.true_ups or self.milestones)

    # --- the JSON-able form kept in Contract.Invoiced events -------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "subscriptions": [
                [cid, ps.isoformat(), [[s.start.isoformat(), s.end.isoformat(),
                                        str(s.unit_amount), str(s.quantity)] for s in segs]]
                for (cid, ps), segs in self.subscriptions.items()
            ],
            "usage": [
                [cid, ps.isoformat(), str(u.quantity), str(u.amount), u.through.isoformat(),
                 u.final, u.metric]
                for (cid, ps), u in self.usage.items()
            ],
            "true_ups": [[cid, ps.isoformat(), str(a)] for (cid, ps), a in self.true_ups.items()],
            "milestones": {cid: str(a) for cid, a in self.milestones.items()},
            "usage_revision": self.usage_revision,
            **({} if self.cycle_date is None else {"cycle_date": self.cycle_date.isoformat()}),
        }

    @classmethod
    def from_record(
        cls, record: dict[str, Any], metric_of: Callable[[str], str] = lambda _: ""
    ) -> BilledState:
        """`metric_of` names the metric of a usage component id, for records stored before
        usage entries kept their metric."""
        d = date.fromisoformat
        return cls(
            subscriptions={
                (cid, d(ps)): tuple(
                    Segment(d(s), d(e), Decimal(u), Decimal(q)) for s, e, u, q in segs
                )
                for cid, ps, segs in record["subscriptions"]
            },
            usage={
                (u[0], d(u[1])): UsageBilled(Decimal(u[2]), Decimal(u[3]), d(u[4]), bool(u[5]),
                                             u[6] if len(u) > 6 else metric_of(u[0]))
                for u in record["usage"]
            },
            true_ups={(cid, d(ps)): Decimal(a) for cid, ps, a in record["true_ups"]},
            milestones={cid: Decimal(a) for cid, a in record["milestones"].items()},
            usage_revision=int(record["usage_revision"]),
            cycle_date=d(record["cycle_date"]) if "cycle_date" in record else None,
        )
