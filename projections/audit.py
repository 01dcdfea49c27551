"""Audit: every batch's inputs, attempts, outcomes and invoices; why each line has its amount.

Follows the billing runs (BillingRun.*), the invoices they issued and the contract terms
(Contract.Created and Contract.Amended). Per batch: the input manifest of each attempt (log
position, usage watermarks, input positions), each contract's outcome, reason and notes on
unbilled usage in each attempt, invoices and totals, and timings. Per invoice line: the usage
it priced (metric, quantity, events, usage revision) and the contract and terms version that
priced it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.billing_run import USAGE_NOTES, BillingRun, billing_run_id
from domain.contract import Contract
from domain.invoice import Invoice
from domain.money import format_money
from domain.transcoding import encode_with
from projections.persistence import Changes, Select, Table
from projections.projection import Positioned, ViewProjection, event_class, topics

STARTED = event_class(BillingRun, "Started")
RESUMED = event_class(BillingRun, "Resumed")
OUTCOMES = event_class(BillingRun, "OutcomesRecorded")
FINISHED = event_class(BillingRun, "Finished")
ISSUED = event_class(Invoice, "InvoiceIssued")
CREATED = event_class(Contract, "Created")
AMENDED = event_class(Contract, "Amended")

BATCHES = Table(
    "audit_batches",
    (("batch_id", "TEXT"), ("run_id", "TEXT"), ("cycle_date", "TEXT"), ("started_at", "TEXT"),
     ("finished_at", "TEXT"), ("attempts", "INTEGER"), ("invoices", "INTEGER"),
     ("totals", "TEXT"), ("counts", "TEXT"), ("position", "BIGINT")),
    key=("batch_id",),
    indexes=(("run_id",),),
)
ATTEMPTS = Table(
    "audit_attempts",
    (("batch_id", "TEXT"), ("attempt", "INTEGER"), ("kind", "TEXT"), ("started_at", "TEXT"),
     ("finished_at", "TEXT"), ("log_position", "BIGINT"), ("watermarks", "TEXT"),
     ("manifest", "TEXT"), ("counts", "TEXT"), ("position", "BIGINT")),
    key=("batch_id", "attempt"),
)
OUTCOMES_TABLE = Table(
    "audit_outcomes",
    (("batch_id", "TEXT"), ("contract_id", "TEXT"), ("attempt", "INTEGER"),
     ("outcome", "TEXT"), ("reason", "TEXT"), ("number", "TEXT"), ("total", "TEXT"),
     ("currency", "TEXT"), ("next_due", "TEXT"), ("usage_notes", "TEXT"),
     ("position", "BIGINT")),
    key=("batch_id", "contract_id", "attempt"),
)
INVOICES = Table(
    "audit_invoices",
    (("number", "TEXT"), ("invoice_id", "TEXT"), ("batch_id", "TEXT"), ("attempt", "INTEGER"),
     ("contract_id", "TEXT"), ("customer_id", "TEXT"), ("currency", "TEXT"),
     ("document_type", "TEXT"), ("cycle_date", "TEXT"), ("issue_date", "TEXT"),
     ("due_date", "TEXT"), ("total", "TEXT"), ("subtotals", "TEXT"),
     ("contract_version", "INTEGER"), ("position", "BIGINT")),
    key=("number",),
    report_indexes=(("batch_id",), ("contract_id",)),
    append_only=True,
)
LINES = Table(
    "audit_lines",
    (("number", "TEXT"), ("line", "INTEGER"), ("component_id", "TEXT"), ("kind", "TEXT"),
     ("description", "TEXT"), ("quantity", "TEXT"), ("unit_amount", "TEXT"), ("amount", "TEXT"),
     ("period_start", "TEXT"), ("period_end", "TEXT"), ("metric", "TEXT"),
     ("usage_quantity", "TEXT"), ("usage_events", "BIGINT"), ("usage_revision", "BIGINT"),
     ("terms_effective", "TEXT"), ("basis", "TEXT")),
    key=("number", "line"),
    append_only=True,
)
TERMS = Table(
    "audit_terms",
    (("contract_uuid", "TEXT"), ("version", "INTEGER"), ("effective_date", "TEXT"),
     ("components", "TEXT"), ("usage_threshold_amount", "TEXT"),
     ("payment_terms_days", "INTEGER"), ("position", "BIGINT")),
    key=("contract_uuid", "version"),
    append_only=True,
)


# One encoder for every row, its C encoder made once (json.dumps with options makes both per
# call; a row's JSON is a few small dicts decoded from events, which cannot hold themselves).
_json = encode_with(json.JSONEncoder(sort_keys=True, default=str))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


@dataclass
class _Batch:
    batch_id: str
    run_id: str
    cycle_date: str
    started_at: str
    finished_at: str | None = None
    attempts: int = 1
    invoices: int = 0
    totals: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    position: int = 0

    def row(self) -> tuple[Any, ...]:
        return (self.batch_id, self.run_id, self.cycle_date, self.started_at, self.finished_at,
                self.attempts, self.invoices, _json(self.totals), _json(self.counts),
                self.position)

    def add_invoice(self, currency: str, total: Decimal) -> None:
        self.invoices += 1
        sum_ = Decimal(self.totals.get(currency, "0")) + total
        self.totals[currency] = format_money(sum_, currency)


@dataclass
class _Attempt:
    batch_id: str
    attempt: int
    kind: str
    started_at: str
    finished_at: str | None
    log_position: int | None
    watermarks: str
    manifest: str
    counts: str | None
    position: int

    @classmethod
    def of(cls, b: _Batch, kind: str, started_at: datetime, manifest: dict[str, Any],
           position: int) -> _Attempt:
        return cls(b.batch_id, b.attempts, kind, started_at.isoformat(), None,
                   manifest.get("log_position"), _json(manifest.get("watermarks", {})),
                   _json(manifest), None, position)

    def row(self) -> tuple[Any, ...]:
        return tuple(self.__dict__.values())


class AuditProjection(ViewProjection):
    name = "audit"
    topics = topics(STARTED, RESUMED, OUTCOMES, FINISHED, ISSUED, CREATED, AMENDED)
    tables = (BATCHES, ATTEMPTS, OUTCOMES_TABLE, INVOICES, LINES, TERMS)

    def changes(self, events: Sequence[Positioned]) -> Changes:
        changes = Changes()
        batches = self._batches(events)
        attempts: dict[tuple[str, int], _Attempt] = {}
        born: set[str] = set()  # batches and attempts that start in these events
        begun: set[tuple[str, int]] = set()
        for event, position in events:
            if isinstance(event, CREATED | AMENDED):
                changes.insert(TERMS, _terms_row(event, position))
                continue
            if isinstance(event, ISSUED):
                b = next(b for b in batches.values() if b.batch_id == event.batch_id)
                b.add_invoice(event.currency, event.total)
                _issued(changes, event, b.attempts, position)
                continue
            run_id = str(event.originator_id)
            if isinstance(event, STARTED):
                b = batches[run_id] = _Batch(event.batch_id, run_id, event.cycle_date.isoformat(),
                                             event.started_at.isoformat())
                born.add(run_id)
            else:
                b = batches[run_id]
            b.position = position
            if isinstance(event, STARTED | RESUMED):
                if isinstance(event, RESUMED):
                    b.attempts += 1
                    b.finished_at = None
                kind = getattr(event, "kind", "run")
                attempts[(b.batch_id, b.attempts)] = _Attempt.of(
                    b, kind, event.started_at, event.manifest, position)
                begun.add((b.batch_id, b.attempts))
            elif isinstance(event, OUTCOMES):
                for o in event.outcomes:
                    changes.put(OUTCOMES_TABLE, (
                        b.batch_id, o["contract_id"], b.attempts, o["outcome"], o.get("reason"),
                        o.get("number"), o.get("total"), o.get("currency"), o.get("next_due"),
                        _usage_notes(o), position), new=(b.batch_id, b.attempts) in begun)
            elif isinstance(event, FINISHED):
                b.finished_at, b.counts = event.finished_at.isoformat(), event.counts
                key = (b.batch_id, b.attempts)
                attempt = attempts.get(key) or self._attempt(key)
                attempt.finished_at, attempt.counts = b.finished_at, _json(event.counts)
                attempts[key] = attempt
        for b in batches.values():
            changes.put(BATCHES, b.row(), new=b.run_id in born)
        for key, a in attempts.items():
            changes.put(ATTEMPTS, a.row(), new=key in begun)
        return changes

    def _batches(self, events: Sequence[Positioned]) -> dict[str, _Batch]:
        """The batches these events continue, as the view has them, by run id."""
        runs = {str(e.originator_id) for e, _ in events
                if isinstance(e, RESUMED | OUTCOMES | FINISHED)}
        runs |= {str(billing_run_id(b)) for b in {e.batch_id for e, _ in events
                                                  if isinstance(e, ISSUED)}}
        runs -= {str(e.originator_id) for e, _ in events if isinstance(e, STARTED)}
        if not runs:
            return {}
        marks = ", ".join("?" for _ in runs)
        rows = self.view.select(
            "SELECT batch_id, run_id, cycle_date, started_at, finished_at, attempts, invoices,"
            f" totals, counts, position FROM audit_batches WHERE run_id IN ({marks})",
            sorted(runs))
        return {
            run_id: _Batch(batch_id, run_id, cycle, started, finished, attempts, invoices,
                           json.loads(totals), json.loads(counts), position)
            for batch_id, run_id, cycle, started, finished, attempts, invoices, totals, counts,
            position in rows
        }

    def _attempt(self, key: tuple[str, int]) -> _Attempt:
        (row,) = self.view.select(
            "SELECT * FROM audit_attempts WHERE batch_id = ? AND attempt = ?", key)
        return _Attempt(*row)


def _terms_row(event: Any, position: int) -> tuple[Any, ...]:
    effective = getattr(event, "effective_date", None) or event.start_date
    return (str(event.originator_id), event.originator_version, effective.isoformat(),
            _json(event.components), _text(event.usage_threshold_amount),
            event.payment_terms_days, position)


def _issued(changes: Changes, event: Any, attempt: int, position: int) -> None:
    changes.insert(INVOICES, (
        event.number, str(event.originator_id), event.batch_id, attempt, event.contract_id,
        event.customer_id, event.currency, event.document_type, event.cycle_date.isoformat(),
        event.issue_date.isoformat(), event.due_date.isoformat(), str(event.total),
        _json({k: str(v) for k, v in event.subtotals.items()}), event.contract_version,
        position,
    ))
    for i, line in enumerate(event.lines):
        basis = line.get("basis") or {}
        changes.insert(LINES, (
            event.number, i, line["component_id"], line["kind"], line["description"],
            line["quantity"], line.get("unit_amount"), line["amount"], line["period_start"],
            line["period_end"], basis.get("metric"), basis.get("quantity"),
            basis.get("events"), basis.get("usage_revision"), basis.get("terms_effective"),
            _json(basis),
        ))


# --- reading ---------------------------------------------------------------------------------


def explain(select: Select, number: str) -> dict[str, Any] | None:
    """`explain INVOICE_NUMBER`: the invoice, the batch attempt that issued it, and per line
    what it priced (usage, terms) and how its amount follows."""
    found = select("SELECT * FROM audit_invoices WHERE number = ?", (number,))
    if not found:
        return None
    invoice = dict(zip(INVOICES.column_names, found[0], strict=True))
    invoice["subtotals"] = json.loads(invoice["subtotals"])
    position = invoice.pop("position")
    attempts = select(
        "SELECT kind, started_at, finished_at, log_position, watermarks, manifest"
        " FROM audit_attempts WHERE batch_id = ? AND attempt = ?",
        (invoice["batch_id"], invoice["attempt"]))
    batch = None
    if attempts:
        kind, started, finished, log_position, watermarks, manifest = attempts[0]
        batch = {"batch_id": invoice["batch_id"], "attempt": invoice["attempt"], "kind": kind,
                 "started_at": started, "finished_at": finished, "log_position": log_position,
                 "watermarks": json.loads(watermarks), "manifest": json.loads(manifest)}
    terms = _terms_known(select, invoice["contract_id"], invoice["contract_version"])
    lines = []
    for row in select("SELECT * FROM audit_lines WHERE number = ? ORDER BY line", (number,)):
        line = dict(zip(LINES.column_names, row, strict=True))
        line["basis"] = json.loads(line["basis"])
        effective = line["terms_effective"] or _effective_on(terms, line["period_start"])
        version = terms.get(effective or "")
        component = next((c for c in version["components"]
                          if c["id"] == line["component_id"]), None) if version else None
        line["terms"] = None if version is None else {
            "effective_date": effective, "version": version["version"], "component": component}
        if line["kind"] in ("usage", "late_usage") and Decimal(
                line["basis"].get("already_billed") or 0):
            line["billed_before"] = billed_before(select, invoice["contract_id"], position, line)
        line["explanation"] = explain_line(line, component, invoice["currency"])
        lines.append(line)
    return {"invoice": invoice, "batch": batch, "lines": lines}


def billed_before(select: Select, contract_id: str, position: int, line: dict[str, Any]
                  ) -> list[dict[str, Any]]:
    """The lines of the contract's earlier documents that billed the usage of a usage line's
    period under its component (or the ids it was billed as before a rename): what its
    `already_billed` adds up."""
    components = [line["component_id"], *line["basis"].get("billed_as", [])]
    marks = ", ".join("?" for _ in components)
    rows = select(
        "SELECT l.number, i.issue_date, l.line, l.kind, l.amount, l.period_start, l.period_end"
        " FROM audit_invoices i JOIN audit_lines l ON l.number = i.number"
        " WHERE i.contract_id = ? AND i.position < ? AND l.kind IN ('usage', 'late_usage')"
        f" AND l.component_id IN ({marks}) AND l.period_start < ? AND l.period_end > ?"
        " ORDER BY i.position, l.line",
        (contract_id, position, *components, line["period_end"], line["period_start"]))
    return [{"number": number, "issue_date": issued, "line": n, "kind": kind, "amount": amount,
             "period_start": start, "period_end": end}
            for number, issued, n, kind, amount, start, end in rows]


def _terms_known(select: Select, contract_id: str, version: int) -> dict[str, dict[str, Any]]:
    """The contract's terms by effective date as they stood at `version` (later ones win)."""
    known: dict[str, dict[str, Any]] = {}
    for v, effective, components in select(
            "SELECT version, effective_date, components FROM audit_terms"
            " WHERE contract_uuid = ? AND version <= ? ORDER BY version",
            (str(Contract.create_id(contract_id)), version)):
        known[effective] = {"version": v, "components": json.loads(components)}
    return known


def _effective_on(terms: dict[str, dict[str, Any]], day: str) -> str | None:
    return max((d for d in terms if d <= day), default=None)


def explain_line(line: dict[str, Any], component: dict[str, Any] | None, currency: str) -> str:
    """Why the line has its amount, in one sentence."""
    b, amount, kind = line["basis"], line["amount"], line["kind"]
    if b.get("withdrawn"):  # usage (or its true-up) billed before and owed no more
        on = ", ".join(e["number"] for e in line.get("billed_before", []))
        return (f"{b['already_billed']} billed for the period is owed no more"
                f"{f' (billed on {on})' if on else ''}: {line['description']}; line {amount} "
                f"{currency}")
    if kind == "proration" and b.get("credit") and "billed_stretch" in b:
        start, end = b["billed_stretch"]
        return (f"{amount} {currency} = minus (the rounded worth of {start} to {end} at "
                f"{b['rate']} per period of {b['period_days']} days, as billed, less the "
                "rounded worth of its days kept on either side of "
                f"{line['period_start']} to {line['period_end']})")
    if kind in ("subscription", "proration") and "rate" in b:
        sign = "-" if b.get("credit") else ""
        return (f"{amount} {currency} = {sign}{b['rate']} per period x {b['days']}/"
                f"{b['period_days']} days of the period {b['full_period'][0]} to "
                f"{b['full_period'][1]}, rounded half-up")
    if kind in ("usage", "late_usage") and "metric" in b:
        pricing = (component or {}).get("pricing")
        model = f" under {pricing['model']} pricing {_json(pricing)}" if pricing else ""
        text = (f"{b['quantity']} {b['metric']} ({b['aggregation']} of {b['events']} usage "
                f"events, meters read through log position {b['usage_revision']}) priced"
                f"{model} = {b['priced_amount']}")
        if b.get("threshold"):
            text += f"; billed early because usage reached the threshold {b['threshold']}"
        if b.get("uncounted_events"):
            counted = (component or {}).get("unique_property") or "counted property"
            text += (f"; {b['uncounted_events']} of the events count nobody: their {counted} "
                     "is a decimal, null, array or object, which unique_count does not count "
                     f"(e.g. {b['uncounted_example']})")
        if "untagged_usage_within" in b:
            spans = b["untagged_usage_within"]
            text += (f"; of the usage sent without contract_id, only that of {', '.join(spans)}"
                     " is this contract's, the rest another's" if spans else
                     "; none of the usage sent without contract_id is this contract's") + (
                " (the only contract pricing it at that instant, or the one assigned it)")
        if Decimal(b.get("already_billed") or 0):
            text += f"; less {b['already_billed']} already billed for the period"
            if line.get("billed_before"):
                text += " (" + ", ".join(
                    f"{e['amount']} on {e['number']} line {e['line'] + 1}"
                    for e in line["billed_before"]) + ")"
        if b.get("contract_changed_from"):
            why = "; ".join(b.get("contract_changes") or []) or (
                "terms amended, service ended or untagged usage assigned anew since")
            text += (f"; priced again because the contract changed from "
                     f"{b['contract_changed_from']} after the period was invoiced ({why})")
        return f"{text}; line {amount} {currency}"
    if kind == "minimum_true_up":
        return (f"usage amount {b['usage_amount']} is below the minimum {b['minimum_amount']}: "
                f"the difference (less any true-up billed before) is {amount} {currency}")
    if kind == "milestone":
        return (f"milestone {b.get('milestone')} completed on {b.get('completed_on')}: fixed "
                f"amount {line['unit_amount']} = {amount} {currency}")
    return f"{line['description']}: {amount} {currency}"


def batches(select: Select) -> list[dict[str, Any]]:
    """Every batch in the order they started."""
    rows = select("SELECT batch_id, cycle_date, started_at, finished_at, attempts, invoices,"
                  " totals, counts FROM audit_batches ORDER BY started_at, batch_id")
    return [
        {"batch_id": b, "cycle_date": cycle, "started_at": started, "finished_at": finished,
         "attempts": attempts, "invoices": invoices, "totals": json.loads(totals),
         "counts": json.loads(counts)}
        for b, cycle, started, finished, attempts, invoices, totals, counts in rows
    ]


def _usage_notes(outcome: dict[str, Any]) -> str | None:
    """The outcome's notes on its customer's unbilled usage (USAGE_NOTES), as a JSON object
    by note; None when it has none."""
    notes = {note: outcome[note] for note in USAGE_NOTES if outcome.get(note)}
    return _json(notes) if notes else None
