"""Human-readable output of the CLI: tables, the batch report and a terminal progress bar."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, TextIO

from domain.billing_run import USAGE_NOTES, Outcome
from domain.billing_runs import RunReport
from domain.inbox import context_sources, shown_source, slowest_first
from domain.invoice import invoice_sequence
from domain.money import format_money


class ProgressBar:
    """A one-line bar redrawn in place on a terminal (stderr), at most ten times a second."""

    def __init__(self, stream: TextIO, width: int = 40) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, done: int, total: int) -> None:
        moment = time.monotonic()
        if done < total and moment - self.drawn < 0.1:
            return
        self.drawn = moment
        share = done / total if total else 1.0
        filled = int(self.width * share)
        rate = done / max(moment - self.started, 1e-9)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} contracts "
            f"{rate:,.0f}/s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


SHOWN = 10  # held or failed contracts listed in a run summary; `batch show` lists them all


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


def ingest_summary(doc: dict[str, Any]) -> str:
    lines = [f"accepted {doc['accepted']}, duplicates ignored {doc['duplicates']}, "
             f"rejected {len(doc['rejected'])}"]
    for r in doc["rejected"]:
        lines.append(f"  rejected {r['source']} {r['position']}: {r['reason']}")
    lines.extend(f"  note: {note}" for note in doc.get("notes", ()))
    return "\n".join(lines)


def run_summary(report: RunReport) -> str:
    counts = report.counts()
    mode = "DRY RUN (nothing written) " if report.dry_run else ""
    retry = report.attempt == "retry"
    elsewhere = ", ".join(f"batch {b}: {n}" for b, n in report.billed_by().items())
    nothing = retry and not counts["contracts"]
    out = [
        f"{mode}{'retry of ' if retry else ''}batch {report.batch_id} for cycle date "
        f"{report.cycle_date}",
        # A retry's figures are its own, apart from the batch's, so that a run's and its
        # retries' add up to the batch (QA: "invoiced 190" of a retry that issued 12).
        f"  nothing to retry: batch {report.batch_id} held and failed no contract (the "
        "retry is kept among its attempts)" if nothing else
        f"  {'this retry: ' if retry else ''}{_counts(counts)}"
        + (f" (billed by {elsewhere})" if elsewhere else ""),
    ]
    totals: Counter[str] = Counter()
    currency_totals: dict[str, Any] = {}
    for invoice in report.invoices:
        totals[invoice.currency] += 1
        currency_totals[invoice.currency] = currency_totals.get(invoice.currency, 0) + invoice.total
    issued = "this retry issued " if retry else ""
    for cur in sorted(totals):
        out.append(f"  {issued}{plural(totals[cur], 'invoice')} in {cur}, total "
                   f"{format_money(currency_totals[cur], cur)}")
    if report.invoices:
        out.append(f"  {issued}numbers {_number_range([i.number for i in report.invoices])}")
    if report.batch_counts is not None and (retry or report.batch_counts != counts):
        # QA L1: "settled the contracts and issued the invoices above" of a retry of none.
        share = "" if nothing else (
            f" (this {report.attempt} decided {counts['contracts']} of them and issued "
            f"{plural(len(report.invoices), 'invoice') if report.invoices else 'no invoice'}"
            "; earlier attempts or another process on this batch id the rest)")
        out.append(f"  batch {report.batch_id} {'now ' if retry else ''}holds: "
                   f"{_counts(report.batch_counts)}{share}")
    for kind in (Outcome.HELD, Outcome.FAILED):
        listed = [o for o in report.outcomes.values() if o.outcome is kind]
        for o in listed[:SHOWN]:
            out.append(f"  {kind.value} {o.contract_id}: {shorten(o.reason or '', 160)}")
        if len(listed) > SHOWN:
            out.append(f"  ... and {len(listed) - SHOWN} more {kind.value}")
    for warning in report.warnings:
        out.append(f"  warning: {warning}")
    if report.dry_run:  # nothing kept to show
        out.append("  nothing was written: run it without --dry-run to bill and keep the batch")
    else:
        out.append(f"  explain it: billcycle batch show {report.batch_id}")
    return "\n".join(out)


def _counts(counts: dict[str, int]) -> str:
    return (f"contracts {counts['contracts']}: invoiced {counts['invoiced']}, held "
            f"{counts['held']}, failed {counts['failed']}, not due {counts['not_due']}")


def _number_range(numbers: list[str]) -> str:
    """The first and last number a run issued, and how many of those between it issued where
    another run took some (two runs at once share the one sequence)."""
    ordered = sorted(numbers, key=invoice_sequence)
    first, last = ordered[0], ordered[-1]
    span = invoice_sequence(last) - invoice_sequence(first) + 1
    if span == len(ordered):
        return f"{first} .. {last}"
    return (f"{first} .. {last}: {len(ordered)} of those {span} (not a contiguous range; "
            "other runs took the rest)")


def invoice_table(views: list[dict[str, Any]]) -> str:
    rows = [[v["number"], v["document_type"], v["contract_id"], v["customer_id"],
             v["issue_date"], v["due_date"], f"{v['total']} {v['currency']}", v["batch_id"]]
            for v in views]
    return table(["number", "type", "contract", "customer", "issued", "due", "total", "batch"],
                 rows)


def _watermark(manifest: dict[str, Any], metric: str, mark: str) -> str:
    """A metric's watermark as a batch's input had it, with the source it came from where
    the metric had several (each active source bounds it), and how many were retired."""
    active, retired = context_sources(manifest)
    sources = active.get(metric, {})
    gone = len((retired or {}).get(metric, {}))
    said = []
    if len(sources) > 1:
        said.append(f"source {shown_source(slowest_first(sources)[0])}, the slowest of "
                    f"{len(sources)}{' active' if gone else ''}")
    elif sources and gone:
        said.append(f"source {shown_source(next(iter(sources)))}")
    if gone:
        said.append(f"{gone} retired" if sources else
                    "its one source retired" if gone == 1 else f"all {gone} sources retired")
    return f"{metric} {mark} ({'; '.join(said)})" if said else f"{metric} {mark}"


def batch_report(view: dict[str, Any]) -> str:
    c = view["counts"]
    latest = view["attempts"][-1]["manifest"]  # a retry reads newer input than the first run
    out = [
        f"batch {view['batch_id']}  cycle date {view['cycle_date']}  {view['status']}",
        f"started {view['started_at']}  finished {view['finished_at'] or '-'}",
        f"input of the latest attempt: log position {latest.get('log_position')}, watermarks "
        + (", ".join(_watermark(latest, m, t) for m, t in latest.get("watermarks", {}).items())
           or "none"),
        *_without_contract(latest),
        *_acknowledged(latest),
        *_assigned(latest),
        "attempts: " + ", ".join(f"{a['kind']} at {a['started_at']}" for a in view["attempts"]),
        f"contracts {c['contracts']} = invoiced {c['invoiced']} + held {c['held']} + failed "
        f"{c['failed']} + not due {c['not_due']}",
        "",
    ]
    rows = []
    for o in view["contracts"]:
        if o["outcome"] == "invoiced":
            detail = f"{o['number']} total {o['total']} {o['currency']}"
        elif o["outcome"] == "not_due":
            # As the contract stood when this batch's attempt decided it: a later batch may
            # have billed it since (docs/accounting.md, "Retries").
            detail = (f"next due {o['next_due']} (as of the attempt that decided it)"
                      if o.get("next_due") else "next due never (ended)")
            if o.get("reason"):
                detail += f"; {o['reason']}"
        else:
            detail = o.get("reason", "")
        for note in USAGE_NOTES:
            if o.get(note):
                detail += f"; {o[note]}"
        rows.append([o["contract_id"], o["outcome"], detail])
    out.append(table(["contract", "outcome", "detail"], rows))
    return "\n".join(out)


def _without_contract(manifest: dict[str, Any]) -> list[str]:
    found = manifest.get("usage_without_contract")
    if not found:
        return []
    return [f"usage without a contract, not billed: {plural(found['customers'], 'customer')}, "
            f"{plural(found['events'], 'event')} (billcycle report usage-without-contract)"]


def _acknowledged(manifest: dict[str, Any]) -> list[str]:
    found = manifest.get("acknowledged_usage")
    if not found:
        return []
    return ["usage acknowledged as not to be billed, left out of the notes: " + "; ".join(
        f"{a['customer_id']} {a['metric']} before {a['through']} ({a['reason']}; by {a['by']})"
        for a in found)]


def _assigned(manifest: dict[str, Any]) -> list[str]:
    found = manifest.get("assigned_usage")
    if not found:
        return []
    return ["untagged usage assigned to a contract: " + "; ".join(
        f"{a['customer_id']} {a['metric']} from {a['start']} to {a['end']} to "
        f"{a['contract_id']} ({a['reason']}; by {a['by']})" for a in found)]


def dead_letter_table(letters: list[dict[str, Any]]) -> str:
    if not letters:
        return "no dead letters"
    rows = [[d["source"], d["at"], d.get("message_id") or "-", d["reason"]] for d in letters]
    return table(["source", "position", "message id", "reason"], rows)
