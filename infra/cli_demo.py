"""The `demo` command: a sample book billed on the embedded store, and a report of what happened.

The book (infra.sample_book) is ingested as it arrived: first what had arrived by the run of
the previous cycle date, then that run, then the rest. The run of the cycle date (a dry run
first, then the real one) so has earlier invoices to prorate against and to bill late usage on.
The same cycle date is then run again to show that nothing is billed twice.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import textwrap
import time
from collections.abc import Iterable
from contextlib import closing
from datetime import date, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.application import BillingApplication, IngestReport
from domain.billing_run import Outcome
from domain.billing_runs import BillingRuns, Progress, RunReport
from domain.calendar import boundary
from domain.commands import Origin
from domain.contract import Contract
from domain.invoice import Invoice
from domain.invoice_lines import LineKind
from domain.money import format_money
from domain.terms import BillingFrequency
from infra import sample_book
from infra.cli_args import parse_date
from infra.views import invoice_view

if TYPE_CHECKING:
    from infra.cli import Subcommands

DEMO_DB = "billcycle-demo.db"
INGEST_BATCH = 2000
EXAMPLES = 4
LISTED = 5  # contract ids listed for a reason in the text report
WIDTH = 100  # of the example invoices; longer descriptions push their amount right


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""

    p = sub.add_parser(
        "demo", help="bill a generated sample book on a fresh SQLite store and explain it",
        description=f"Generate a sample book, ingest it, bill it and report. The store is "
        f"sqlite:///{DEMO_DB} in the current directory, replaced on each run, unless --db "
        "names another (BILLCYCLE_DB is not used), which must be empty.",
        db_help=f"an empty store to run the demo in: sqlite:///PATH or "
        f"postgresql://USER:PASSWORD@HOST:PORT/DB (default sqlite:///{DEMO_DB} here, "
        "replaced on each run; BILLCYCLE_DB is not used)")
    p.add_argument("--contracts", type=int, default=sample_book.DEFAULT_CONTRACTS,
                   help=f"contracts in the book (default {sample_book.DEFAULT_CONTRACTS})")
    p.add_argument("--seed", type=int, default=sample_book.DEFAULT_SEED,
                   help=f"the same seed gives the same book (default {sample_book.DEFAULT_SEED})")
    p.add_argument("--cycle-date", type=parse_date, default=sample_book.DEFAULT_CYCLE_DATE,
                   metavar="YYYY-MM-DD",
                   help=f"default {sample_book.DEFAULT_CYCLE_DATE}; usage is for the month before")
    p.add_argument("--events", type=int, default=sample_book.DEFAULT_EVENTS,
                   help="usage events per usage contract per month "
                   f"(default {sample_book.DEFAULT_EVENTS})")
    p.set_defaults(handler=cmd_demo, own_store=True)


def cmd_demo(args: argparse.Namespace, app: BillingApplication | None) -> None:
    from infra.cli import UserError, emit

    if args.contracts < 1 or args.events < 0:
        raise UserError("--contracts must be at least 1 and --events at least 0")
    url, store = _demo_store(args)
    with closing(store):
        document = Demo(args, url, store).run()
    if args.json:
        emit(args, document, lambda: "")


def _demo_store(args: argparse.Namespace) -> tuple[str, BillingApplication]:
    """A fresh billcycle-demo.db here, or the store --db names if it is empty.

    BILLCYCLE_DB does not count: it names the store for everyday commands, and the demo stays
    out of it (`eval "$(./infra/dev up)"` sets it). Only an explicit --db does.
    """
    from infra.cli import UserError, open_app

    if args.db_given:
        app = open_app(args.db, create=True)
        if app.store.max_notification_id():
            app.close()
            raise UserError(
                f"the store {args.db} is not empty; the demo needs an empty one: name a new "
                f"store with --db, or leave --db out to use {DEMO_DB} here (replaced on each run)"
            )
        return args.db, app
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(DEMO_DB + suffix).unlink(missing_ok=True)
    url = f"sqlite:///{DEMO_DB}"
    return url, open_app(url, create=True)


class Demo:
    """The demo's steps; each adds its part to the JSON document and, in text, prints it."""

    def __init__(self, args: argparse.Namespace, url: str, app: BillingApplication) -> None:
        self.args = args
        self.app = app
        self.cycle: date = args.cycle_date
        self.previous = sample_book.previous_cycle_date(self.cycle)
        self.started = time.monotonic()
        self.invoices: list[Invoice] = []
        self.after_service: Contract | None = None  # one whose usage after its end is named
        self.doc: dict[str, Any] = {
            "store": url,
            "book": {"contracts": args.contracts, "seed": args.seed,
                     "cycle_date": self.cycle.isoformat(), "events": args.events,
                     "previous_cycle_date": self.previous.isoformat()},
        }

    def run(self) -> dict[str, Any]:
        self._say(self._title())
        self._ingest()
        self._bill()
        self._examples()
        self._rerun()
        self._explore()
        return self.doc

    # --- steps ------------------------------------------------------------------------------

    def _ingest(self) -> None:
        ingest = self.doc["ingest"] = {}
        parts = []
        total = IngestReport()
        arrivals: tuple[tuple[sample_book.Part, str], ...] = (
            ("before", f"arrived before the {self.previous} run"), ("after", "arrived after it"))
        for part, when in arrivals:
            self._note(f"ingesting the sample book: messages that {when}")
            report = self._ingest_part(part)
            total.add(report)
            parts.append({"part": part, "source": f"sample:{part}", "arrived": when,
                          "messages": report.accepted + report.duplicates + len(report.rejected),
                          "accepted": report.accepted, "duplicates": report.duplicates,
                          "rejected": len(report.rejected)})
            if part == "before":
                self._note(f"billing the previous cycle date {self.previous}")
                self.doc["previous_run"] = _run_summary(self._run(self.previous))
        ingest.update({
            "accepted": total.accepted, "duplicates": total.duplicates,
            "rejected": [{"source": r.origin.source, "position": r.origin.position,
                          "message_id": r.message_id, "reason": r.reason}
                         for r in total.rejected],
            "parts": parts,
        })
        self._say(_ingest_text(ingest, self.doc["previous_run"]))

    def _run(self, cycle_date: date, dry_run: bool = False) -> RunReport:
        from infra.cli import now

        # A fresh BillingRuns for every run: it caches the invoice numbering between chunks.
        runs = BillingRuns(self.app, now)
        return runs.run(cycle_date, dry_run=dry_run, progress=self._progress())

    def _ingest_part(self, part: sample_book.Part) -> IngestReport:
        from consumers.pipeline import IngestPipeline

        a = self.args
        lines = sample_book.generate(a.contracts, a.seed, self.cycle, a.events, part,
                                     self._progress())
        origins = (Origin(f"sample:{part}", f"line {n}", line.rstrip(b"\n"))
                   for n, line in enumerate(lines, start=1))
        pipeline = IngestPipeline(self.app)
        report = IngestReport()
        while batch := list(islice(origins, INGEST_BATCH)):
            report.add(pipeline.process(batch))
        return report

    def _bill(self) -> None:
        self._note(f"dry run for {self.cycle}")
        dry = self._run(self.cycle, dry_run=True)
        self._note(f"billing run for {self.cycle}")
        report = self._run(self.cycle)
        self.doc["dry_run"] = {"batch_id": dry.batch_id, "counts": dry.counts(),
                               "invoices": len(dry.invoices)}
        self.doc["run"] = {**_run_summary(report), **_run_details(report)}
        self.invoices = [i for i in map(self.app.invoice, (r.number for r in report.invoices))
                         if i is not None]
        noted = sorted(o.contract_id for o in report.outcomes.values()
                       if o.usage_outside_service)
        self.after_service = self.app.contract(noted[0]) if noted else None
        self._say(_run_text(self.doc["dry_run"], self.doc["run"]))

    def _examples(self) -> None:
        self.doc["examples"] = [invoice_view(i) for i in _examples(self.invoices)]
        self._say(_examples_text(self.doc["examples"]))

    def _rerun(self) -> None:
        self._note(f"running {self.cycle} again")
        issued = self.app.issued_count()
        again = self._run(self.cycle)
        self.doc["rerun"] = {**_run_summary(again), "issued_before": issued,
                             "issued_after": self.app.issued_count()}
        self._say(_rerun_text(self.doc["rerun"]))

    def _explore(self) -> None:
        db = f"{_venv_command('billcycle')} --db {self.doc['store']}"
        batch = self.doc["run"]["batch_id"]
        example = self.doc["examples"][0]["contract_id"] if self.doc["examples"] else None
        commands = [f"{db} batch show {batch}", f"{db} invoices --batch {batch}"]
        if example:
            commands.append(f"{db} invoices --contract {example} --json")
        commands.append(f"{db} deadletters")
        if self.doc["run"]["held"]:
            # The lagging producer catches up; the held invoices can then be issued.
            mark = json.dumps({
                "type": "usage.watermark", "id": "wm-catch-up",
                "occurred_at": f"{self.cycle + timedelta(days=1)}T08:00:00Z",
                "metric": sample_book.LAGGING_METRIC, "source": sample_book.WATERMARK_SOURCE,
                "complete_through": (self.cycle + timedelta(days=1)).isoformat()})
            commands.append(f"echo '{mark}' | {db} ingest -")
            commands.append(f"{db} retry {batch}")
        if self.after_service and self.after_service.usage_metrics():
            # Seen, and not to be billed: the next runs name only usage after it.
            ended = self.after_service
            commands.append(
                f"{db} usage acknowledge --customer {ended.customer_id} --metric "
                f"{sorted(ended.usage_metrics())[0]} --through {self.cycle} --reason "
                "'terminated; usage after the end written off'")
        b = self.doc["book"]
        commands.append(f"{_venv_command('python')} -m infra.sample_book --contracts "
                        f"{b['contracts']} --seed {b['seed']} --cycle-date {b['cycle_date']} "
                        f"--events {b['events']} --out book.jsonl")
        self.doc["explore"] = commands
        self.doc["seconds"] = round(time.monotonic() - self.started, 1)
        self._say(_explore_text(commands, self.doc["seconds"]))

    # --- output -----------------------------------------------------------------------------

    def _title(self) -> str:
        b = self.doc["book"]
        return (f"billcycle demo: {b['contracts']} sample contracts (seed {b['seed']}) billed "
                f"for {b['cycle_date']} on {self.doc['store']}")

    def _say(self, text: str) -> None:
        if not self.args.json:
            sys.stdout.write(text + "\n\n")
            sys.stdout.flush()

    def _on_terminal(self) -> bool:
        return not self.args.json and sys.stderr.isatty()

    def _note(self, text: str) -> None:
        if self._on_terminal():
            sys.stderr.write(f"{text} ...\n")

    def _progress(self) -> Progress | None:
        from infra.cli import progress_bar

        return progress_bar(self.args)


# --- the document's parts ---------------------------------------------------------------------


def _run_summary(report: RunReport) -> dict[str, Any]:
    numbers = [i.number for i in report.invoices]
    return {"batch_id": report.batch_id, "cycle_date": report.cycle_date.isoformat(),
            "counts": report.counts(), "invoices": len(numbers),
            "numbers": [numbers[0], numbers[-1]] if numbers else [],
            "warnings": report.warnings}


def _run_details(report: RunReport) -> dict[str, Any]:
    totals: dict[str, dict[str, Any]] = {}
    for invoice in report.invoices:
        entry = totals.setdefault(invoice.currency, {"invoices": 0, "credit_notes": 0,
                                                     "total": Decimal(0)})
        entry["invoices"] += 1
        entry["credit_notes"] += invoice.document_type == "credit_note"
        entry["total"] += invoice.total
    outcomes = sorted(report.outcomes.values(), key=lambda o: o.contract_id)
    return {
        "totals": {cur: {**t, "total": format_money(t["total"], cur)}
                   for cur, t in sorted(totals.items())},
        "held": [{"contract_id": o.contract_id, "reason": o.reason}
                 for o in outcomes if o.outcome is Outcome.HELD],
        "failed": [{"contract_id": o.contract_id, "reason": o.reason}
                   for o in outcomes if o.outcome is Outcome.FAILED],
        "not_due": [{"contract_id": o.contract_id, "next_due": o.next_due, "reason": o.reason}
                    for o in outcomes if o.outcome is Outcome.NOT_DUE],
    }


def _examples(invoices: Iterable[Invoice]) -> list[Invoice]:
    """A few invoices that between them show every kind of line there is, a credit note too."""
    chosen: list[Invoice] = []
    shown: set[str] = set()
    candidates = list(invoices)
    while len(chosen) < EXAMPLES and candidates:
        best = max(candidates, key=lambda i: (len(_kinds(i) - shown), len(_kinds(i)), -i.total))
        if not _kinds(best) - shown:
            break
        chosen.append(best)
        shown |= _kinds(best)
        candidates.remove(best)
    credit = next((i for i in candidates if i.document_type == "credit_note"), None)
    if credit is not None and not any(i.document_type == "credit_note" for i in chosen):
        chosen.append(credit)
    return sorted(chosen, key=lambda i: i.number)


def _kinds(invoice: Invoice) -> set[str]:
    return {line["kind"] for line in invoice.lines}


# --- the text report --------------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def _ingest_text(ingest: dict[str, Any], previous: dict[str, Any]) -> str:
    out = ["Ingest: one pipeline for files and Kafka (validate, dedupe, dead letters)"]
    for p in ingest["parts"]:
        out.append(f"  {p['arrived']:<34} {_n(p['messages']):>7} messages: accepted "
                   f"{_n(p['accepted'])}, duplicates {p['duplicates']}, rejected {p['rejected']}")
        if p["part"] == "before":
            c = previous["counts"]
            numbers = " .. ".join(previous["numbers"]) or "no invoices"
            out.append(f"  then batch {previous['batch_id']} billed {previous['cycle_date']}: "
                       f"invoiced {c['invoiced']}, not due {c['not_due']} ({numbers})")
    rejected = ingest["rejected"]
    if rejected:
        out.append("  rejected (dead letters, kept with their original bytes):")
        out.extend(_wrapped(f"{r['source']} {r['position']}: {r['reason']}") for r in rejected)
    return "\n".join(out)


def _run_text(dry: dict[str, Any], run: dict[str, Any]) -> str:
    d, c = dry["counts"], run["counts"]
    out = [
        f"Billing run for {run['cycle_date']}",
        f"  dry run: would invoice {d['invoiced']}, hold {d['held']}, fail {d['failed']}, "
        f"not due {d['not_due']}; nothing written",
        f"  batch {run['batch_id']}: {c['contracts']} contracts = invoiced {c['invoiced']} + "
        f"held {c['held']} + failed {c['failed']} + not due {c['not_due']}",
    ]
    if run["numbers"]:
        credit_notes = sum(t["credit_notes"] for t in run["totals"].values())
        out.append(f"  numbers {run['numbers'][0]} .. {run['numbers'][1]}, gapless; "
                   f"{credit_notes} of them credit notes")
    for cur, t in run["totals"].items():
        out.append(f"    {cur} {t['invoices']:>5} invoices, total {Decimal(t['total']):>16,}")
    for kind in ("held", "failed"):
        for reason, contracts in _by_reason(run[kind]).items():
            shown = ", ".join(contracts[:LISTED]) + (", ..." if len(contracts) > LISTED else "")
            out.append(f"  {kind} {len(contracts)} ({shown}), for instance:")
            out.append(_wrapped(f"{contracts[0]}: {reason}"))
    if run["not_due"]:
        out.append(f"  not due {len(run['not_due'])}: nothing owed on {run['cycle_date']}; "
                   + _next_due(run["not_due"], date.fromisoformat(run["cycle_date"])))
    out.extend(_wrapped(f"warning: {w}") for w in run["warnings"])
    return "\n".join(out)


def _by_reason(outcomes: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Contracts grouped by reason, reasons that differ only in their figures (dates) as one."""
    groups: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for o in outcomes:
        reason = o["reason"] or ""
        key = re.sub(r"[0-9]+", "#", reason)
        groups.setdefault(first.setdefault(key, reason), []).append(o["contract_id"])
    return groups


def _wrapped(text: str) -> str:
    return textwrap.fill(text, WIDTH, initial_indent="    ", subsequent_indent="      ",
                         break_long_words=False, break_on_hyphens=False)


def _next_due(not_due: list[dict[str, Any]], cycle_date: date) -> str:
    """When the contracts not due fall due: before, on or after the next monthly cycle date."""
    following = boundary(cycle_date, BillingFrequency.MONTHLY, 1).isoformat()
    groups = {f"due before {following}": 0, f"on {following}": 0, "later": 0, "never (ended)": 0}
    for o in not_due:
        due = o["next_due"]
        group = ("never (ended)" if due is None else f"due before {following}"
                 if due < following else f"on {following}" if due == following else "later")
        groups[group] += 1
    return ", ".join(f"{label} {count}" for label, count in groups.items() if count)


def _examples_text(examples: list[dict[str, Any]]) -> str:
    if not examples:
        return "No invoices to show."
    out = ["Example invoices, lines subtotalled by kind"]
    for v in examples:
        out.append(f"  {v['number']} {v['document_type']} {v['contract_id']} ({v['customer_id']})"
                   f" {v['currency']}, issued {v['issue_date']}, due {v['due_date']}, total "
                   f"{v['total']}")
        for kind in LineKind:
            lines = [line for line in v["lines"] if line["kind"] == kind.value]
            if not lines:
                continue
            out.append(_amount_row(f"    {kind.value}", v["subtotals"][kind.value]))
            for line in lines:
                quantity = (f" (quantity {line['quantity']})"
                            if kind in (LineKind.USAGE, LineKind.LATE_USAGE) else "")
                out.append(_amount_row(f"      {line['description']}{quantity}", line["amount"]))
    return "\n".join(out)


def _amount_row(label: str, amount: str) -> str:
    return f"{label:<{WIDTH - len(amount) - 1}} {amount}"


def _rerun_text(rerun: dict[str, Any]) -> str:
    c = rerun["counts"]
    return (f"The same cycle date again: batch {rerun['batch_id']} invoiced {c['invoiced']}, "
            f"held {c['held']}, not due {c['not_due']}; invoices issued "
            f"{rerun['issued_before']} before, {rerun['issued_after']} after: "
            + ("nothing billed twice" if c["invoiced"] == 0 else "SOMETHING WAS BILLED AGAIN"))


def _explore_text(commands: list[str], seconds: float) -> str:
    out = ["Explore further:"]
    out.extend(f"  {command}" for command in commands)
    out.append(f"Done in {seconds} s.")
    return "\n".join(out)


def _venv_command(name: str) -> str:
    """How to call this environment's `name` from here: bare if PATH finds it, else a path."""
    path = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found is not None and Path(found).absolute() == path.absolute():
        return name
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return min(str(path), relative, key=len)
