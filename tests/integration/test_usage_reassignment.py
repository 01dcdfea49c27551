"""Untagged usage two contracts price, assigned, corrected and withdrawn around billing runs,
amendments and terminations of one, in any order: once every window has its final owner, each
event is billed once, by that owner if it priced the metric then, else by the only contract
that did, at its price (domain/meter_reads.py, StoreUsage._owners; Contract.assignment_changed
and rival_changed)."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumers.pipeline import IngestPipeline
from domain.application import BillingApplication
from domain.billing_runs import BillingRuns
from domain.usage_assignments import AssignmentRejected
from infra.store.url import store_env

PRICES = {"ct_1": Decimal(1), "ct_2": Decimal(2)}
# Windows are UTC months; ct_2 may be in Tokyo, whose months end nine hours earlier, so its
# periods are shared between windows (and owners).
MONTHS = [datetime(2026, m, 1, tzinfo=UTC) for m in (10, 11, 12)]
CYCLES = [date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1), date(2027, 2, 1),
          date(2027, 3, 1)]


def created(cid: str, timezone: str) -> dict[str, Any]:
    return {"type": "contract.created", "id": f"c-{cid}", "occurred_at": "2026-10-01T00:00:00Z",
            "contract_id": cid, "customer_id": "cus_1", "currency": "USD",
            "start_date": "2026-10-01", "billing_frequency": "monthly", "timezone": timezone,
            "components": [{"id": "api", "kind": "usage", "metric": "api_calls",
                            "pricing": {"model": "per_unit",
                                        "unit_amount": str(PRICES[cid])}}]}


def untagged(n: int, hour: int, quantity: int) -> dict[str, Any]:
    occurred = MONTHS[0] + timedelta(hours=hour)
    return {"type": "usage", "id": f"u-{n}", "occurred_at": occurred.isoformat(),
            "customer_id": "cus_1", "metric": "api_calls", "quantity": str(quantity)}


def feed(app: BillingApplication, *messages: dict[str, Any]) -> None:
    data = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    IngestPipeline(app).process_lines(io.BytesIO(data), "test")


@contextmanager
def application() -> Iterator[BillingApplication]:
    with tempfile.TemporaryDirectory() as tmp:
        app = BillingApplication(env=store_env(f"sqlite:///{Path(tmp) / 'a.db'}"))
        try:
            yield app
        finally:
            app.close()


OWNER = st.sampled_from(["ct_1", "ct_2"])
USAGE = st.tuples(st.integers(0, 24 * 61 - 1), st.integers(1, 9))  # October and November
ACTION = st.one_of(
    st.tuples(st.just("assign"), st.integers(0, 1), OWNER),
    st.tuples(st.just("unassign"), st.integers(0, 1), st.just("")),
    st.tuples(st.just("run"), st.just(0), st.just("")),
    st.tuples(st.just("usage"), USAGE, st.just("")),
    st.tuples(st.just("terminate"), st.integers(1, 60), st.just("")),  # ct_1, from 10-02
    st.tuples(st.just("amend"), st.integers(0, 60), st.sampled_from(["usage", "platform"])),
)
PLATFORM = {"id": "platform", "kind": "subscription", "amount": "0"}


def ct_1_prices(at: datetime, terms: list[tuple[date, str]], end: date | None) -> bool:
    """Whether ct_1 (UTC, monthly) bills usage at `at`: in service, and priced by the terms
    in force on the last day it serves of that month (contract.md: a period's usage is priced
    by the terms at its end)."""
    day = at.date()
    if end is not None and day >= end:
        return False
    month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    last = min(month_end, end or month_end) - timedelta(days=1)
    # The latest effective date wins; of terms for the same date, the last received.
    in_force = max((e, i) for i, (e, _) in enumerate(terms) if e <= last)
    return terms[in_force[1]][1] == "usage"



@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    timezone=st.sampled_from(["UTC", "Asia/Tokyo"]),
    first=st.lists(USAGE, min_size=1, max_size=4),
    actions=st.lists(ACTION, max_size=8),
    final=st.tuples(OWNER, OWNER),
    settled=st.booleans(),
)
# A rival amended, or terminated, after billing: the other must take the usage over.
@example(timezone="UTC", first=[(10, 1)], final=("ct_1", "ct_1"), settled=True,
         actions=[("run", 0, ""), ("amend", 5, "platform"), ("run", 0, "")])
@example(timezone="Asia/Tokyo", first=[(300, 2)], final=("ct_1", "ct_2"), settled=True,
         actions=[("run", 0, ""), ("terminate", 3, ""), ("run", 0, "")])
# Amended from its start to price no usage: no version prices what it billed (found by this
# property: the contract was neither credited nor its rival told).
@example(timezone="UTC", first=[(0, 1)], final=("ct_1", "ct_1"), settled=True,
         actions=[("run", 0, ""), ("amend", 0, "platform")])
def test_each_untagged_event_ends_billed_once_by_its_final_owner(
    timezone: str, first: list[tuple[int, int]], actions: list[tuple[str, Any, str]],
    final: tuple[str, str], settled: bool,
) -> None:
    """`settled`: the windows get their final owners first, and only amendments,
    terminations, usage and runs follow (nothing re-assigned covers for what they miss)."""
    events = list(first)
    with application() as app:
        feed(app, created("ct_1", "UTC"), created("ct_2", timezone),
             *(untagged(n, hour, q) for n, (hour, q) in enumerate(events)))
        runs = BillingRuns(app, lambda: datetime.now(UTC))
        cycles = iter(CYCLES)
        numbers: list[str] = []
        ended: list[datetime] = []  # ct_1's end dates, the last in force
        terms: list[tuple[date, str]] = [(MONTHS[0].date(), "usage")]  # ct_1's, as received

        def assign(month: int, owner: str) -> None:
            try:
                app.assign_usage("cus_1", "api_calls", owner, MONTHS[month], MONTHS[month + 1],
                                 "per the account manager", "ops", datetime.now(UTC))
            except AssignmentRejected:  # amended to price no usage in any version: none is
                versions = dict(terms)  # by effective date, the last received
                assert owner == "ct_1" and "usage" not in versions.values()  # its to bill

        def bill(cycle: date) -> None:
            numbers.extend(i.number for i in runs.run(cycle).invoices)

        if settled:
            for month, owner in enumerate(final):
                assign(month, owner)
        for kind, arg, owner in actions:
            if settled and kind in ("assign", "unassign"):
                continue
            if kind == "assign":
                assign(arg, owner)
            elif kind == "unassign":
                if any(a.start == MONTHS[arg] for a in app.usage_assignments()):
                    app.withdraw_usage_assignment("cus_1", "api_calls", MONTHS[arg])
            elif kind == "usage":
                feed(app, untagged(len(events), *arg))
                events.append(arg)
            elif kind == "terminate":
                end = MONTHS[0] + timedelta(days=arg)
                feed(app, {"type": "contract.terminated", "id": f"t-{len(ended)}",
                           "occurred_at": "2026-12-15T00:00:00Z", "contract_id": "ct_1",
                           "end_date": end.date().isoformat()})
                ended.append(end)
            elif kind == "amend":
                effective = (MONTHS[0] + timedelta(days=arg)).date()
                if ended and effective >= ended[-1].date():
                    continue  # refused: service has ended by then
                components = ([created("ct_1", "UTC")["components"][0]] if owner == "usage"
                              else [PLATFORM])
                feed(app, {"type": "contract.amended", "id": f"a-{len(terms)}",
                           "occurred_at": "2026-12-15T00:00:00Z", "contract_id": "ct_1",
                           "effective_date": effective.isoformat(), "components": components})
                terms.append((effective, owner))
            elif (cycle := next(cycles, None)) is not None:
                bill(cycle)
        for month, owner in enumerate(final if not settled else ()):
            assign(month, owner)
        for cycle in cycles:
            bill(cycle)
        bill(date(2027, 4, 1))

        billed = {cid: Decimal(0) for cid in PRICES}
        for number in numbers:
            invoice = app.invoice(number)
            assert invoice is not None
            billed[invoice.contract_id] += sum(
                (Decimal(line["amount"]) for line in invoice.lines), Decimal(0))
        owed = {cid: Decimal(0) for cid in PRICES}
        for hour, quantity in events:
            owner = final[hour // (24 * 31)]  # October has 31 days
            ends = ended[-1].date() if ended else None
            if not ct_1_prices(MONTHS[0] + timedelta(hours=hour), terms, ends):
                owner = "ct_2"  # the only contract pricing it then
            owed[owner] += quantity * PRICES[owner]
        assert billed == owed
