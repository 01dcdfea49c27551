"""Read-side commands: reports, explain, collections, projections, replay, export, verify.

Every command that reads a view first catches the projections it reads up with the log (on
the embedded store that is the only way they advance; on PostgreSQL `billcycle project
--follow` usually keeps them current and the catch-up finds little or nothing to do), so what
it prints is exact as of the end of the log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from domain.application import BillingApplication
from domain.billing_runs import resume_command
from domain.collections import CollectionPolicy, InvalidPolicy
from infra.cli_args import BATCH_ID_HELP, parse_date, positive_int, positive_seconds
from infra.text import plural, table

# The projections are imported by the commands that read them: every other command (`consume`,
# `run`) starts 75 ms sooner without them.
if TYPE_CHECKING:
    from infra.cli import Subcommands
    from projections.ledger import OpenItem
    from projections.runner import Projections
    from projections.verify import Verification

POLICY_ENV = "BILLCYCLE_COLLECTION_SCHEDULE"
# projections.runner.PROJECTIONS's names, for the options' choices, and its DEFAULT_PAGE_SIZE,
# for --page-size's default (a test keeps them equal).
PROJECTION_NAMES = ("ledger", "revenue", "audit", "collections")
PAGE_SIZE = 5000


def _page_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--page-size", type=positive_int, default=PAGE_SIZE,
                   help=f"events per transaction (default {PAGE_SIZE})")


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
    from infra.cli import Subcommands

    reports = Subcommands(sub.add_parser(
        "report", help="AR aging; revenue; usage without a contract").add_subparsers(
        dest="report_command", required=True, metavar="REPORT"), sub.common)
    p = reports.add_parser("ar-aging", help="open receivables by days past due, per currency")
    p.add_argument("--as-of", type=parse_date, required=True, metavar="YYYY-MM-DD",
                   help="at the end of this day")
    p.add_argument("--detail", action="store_true", help="also list every open document")
    p.set_defaults(handler=cmd_ar_aging)
    p = reports.add_parser("revenue", help="billed, recognized and deferred revenue")
    p.add_argument("--as-of", type=parse_date, required=True, metavar="YYYY-MM-DD",
                   help="at the end of this day")
    p.add_argument("--by-contract", action="store_true",
                   help="also billed, recognized and deferred per contract")
    p.set_defaults(handler=cmd_revenue)
    p = reports.add_parser("usage-without-contract",
                           help="usage of customers with no contract: accepted, not billed yet")
    p.set_defaults(handler=cmd_usage_without_contract)

    p = sub.add_parser(
        "explain", help="why each line of an invoice has its amount",
        description="Why each line of an invoice has its amount: the terms and pricing, the "
        "usage it priced, and the earlier invoices that billed what a usage line deducts as "
        "already billed.")
    p.add_argument("number", metavar="INVOICE_NUMBER",
                   help="as billcycle invoices lists it, e.g. INV-000001")
    p.add_argument("--line", type=positive_int, metavar="N",
                   help="only line N (as numbered in the text output, from 1)")
    p.add_argument("--usage", action="store_true",
                   help="also list the usage events each usage line counted "
                   "(counted_usage in --json: message id, occurred_at, quantity, "
                   "contract_id, and for unique_count the value it counted) read from "
                   "the log as of the meters' revision the line was billed at; they "
                   "aggregate to the line's quantity. Costs a read of every usage batch "
                   "logged up to that revision (no index by customer: page by page, in "
                   "bounded memory; a batch not naming the customer is not decoded)")
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser(
        "collections", help="reminders and final notices due",
        description="Collection actions due by a date for unpaid invoices. The schedule "
        f"comes from ${POLICY_ENV} (default reminder:7,reminder:14,final_notice:30: days "
        "after the due date), as in force when each invoice was issued.")
    p.add_argument("--as-of", type=parse_date, required=True, metavar="YYYY-MM-DD",
                   help="at the end of this day: the invoices open then, as in "
                   "`report ar-aging --as-of`")
    p.add_argument("--record", action="store_true",
                   help="record the listed actions as sent on the --as-of date (once each); "
                   "those whose invoice was paid, credited or reminded after that date are "
                   "not recorded, and listed as not_recorded with why")
    p.set_defaults(handler=cmd_collections)

    names = ", ".join(PROJECTION_NAMES)
    p = sub.add_parser(
        "project", help="bring the read-side projections up to date with the log",
        description="Process the log into the projections' views, many events per "
        "transaction, resuming where each one stopped. With --follow, keep going (a "
        "projection process of its own, e.g. on PostgreSQL) until interrupted.")
    p.add_argument("--projection", action="append", choices=PROJECTION_NAMES,
                   metavar="NAME", help=f"only this one (repeatable): {names}")
    p.add_argument("--follow", action="store_true", help="keep following the log")
    p.add_argument("--interval", type=positive_seconds, default=0.5,
                   help="seconds between looks at the log when following (default 0.5)")
    _page_size(p)
    p.set_defaults(handler=cmd_project)

    p = sub.add_parser("replay", help="rebuild projections from the whole log",
                       description="Drop the views and build them again from the log.")
    p.add_argument("--projection", action="append", choices=PROJECTION_NAMES,
                   metavar="NAME", help=f"only this one (repeatable): {names}")
    _page_size(p)
    p.set_defaults(handler=cmd_replay)

    exports = Subcommands(sub.add_parser("export", help="the journal for other tools")
                          .add_subparsers(dest="export_command", required=True,
                                          metavar="FORMAT"), sub.common)
    p = exports.add_parser("beancount", help="the AR journal as a Beancount ledger")
    p.add_argument("--as-of", type=parse_date, metavar="YYYY-MM-DD",
                   help="entries through this day, revenue recognized to its end")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(handler=cmd_export_beancount)


def register_batch(batch: Subcommands) -> None:
    """Add this module's subcommands to `billcycle batch`."""
    p = batch.add_parser("list", help="every batch: cycle date, attempts, invoices, totals")
    p.set_defaults(handler=cmd_batch_list)
    p = batch.add_parser(
        "verify", help="bill a past batch again from the log and compare",
        description="Recompute every outcome of the batch from the log as it stood when "
        "each attempt started, and confirm every invoice is identical (exit 1 if not).")
    p.add_argument("batch_id", metavar="BATCH_ID", help=BATCH_ID_HELP)
    p.set_defaults(handler=cmd_batch_verify)


# --- helpers ---------------------------------------------------------------------------------


# infra.cli imports this module to build its parser: what this module needs of it is
# imported when called.


def _error(message: str) -> Exception:
    from infra.cli import UserError

    return UserError(message)


def _emit(args: argparse.Namespace, document: Any, render: Callable[[], str]) -> None:
    from infra.cli import emit

    emit(args, document, render)


def _policy() -> CollectionPolicy:
    text = os.environ.get(POLICY_ENV)
    try:
        return CollectionPolicy.parse(text) if text else CollectionPolicy()
    except InvalidPolicy as exc:
        raise _error(f"{POLICY_ENV}: {exc}") from exc


def _projections(app: BillingApplication, names: Sequence[str],
                 args: argparse.Namespace | None = None) -> Projections:
    from infra.cli import UserError
    from projections.runner import Projections, UnknownProjection, reads_collections

    policy, process = CollectionPolicy(), True
    try:
        policy = _policy()
    except UserError as exc:
        if reads_collections(names):
            raise
        # A typo in the dunning schedule must not stop the month-end reports, which do not
        # read collections: they are brought up to date without starting any.
        print(f"billcycle: {exc}; collections are not started or ended until it is fixed "
              "(this command does not read them)", file=sys.stderr)
        process = False
    try:
        projections = Projections(app, names, policy=policy, collections_process=process,
                                  page_size=getattr(args, "page_size", PAGE_SIZE),
                                  on_page=_progress(args) if args is not None else None)
    except UnknownProjection as exc:
        raise _error(str(exc)) from exc
    for name, why in projections.rebuilt().items():
        print(f"billcycle: view {name} was made by another version of billcycle ({why}): "
              "dropped, and built again from the log", file=sys.stderr)
    return projections


def _caught_up(app: BillingApplication, *names: str) -> Projections:
    projections = _projections(app, names)
    projections.catch_up()
    return projections


def _progress(args: argparse.Namespace) -> Callable[[str, int, int], None] | None:
    if args.json or not sys.stderr.isatty():
        return None

    def show(name: str, position: int, target: int) -> None:
        sys.stderr.write(f"\r{name}: log position {position}/{target}   ")
        if position >= target:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


# --- reports ---------------------------------------------------------------------------------


def cmd_ar_aging(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import ledger

    view = _caught_up(app, "ledger").view("ledger")
    with view.reading() as select:
        items = ledger.open_items(select, args.as_of)
        credit = ledger.customer_credit(select, args.as_of)
    document: dict[str, Any] = ledger.ar_aging(items)
    for currency, held in credit.items():  # beside the buckets: owed to customers, not aged
        document.setdefault(currency, ledger.nothing_open(currency))["customer_credit"] = held
    for currency, buckets in document.items():  # a key a consumer can read, zero or not
        buckets.setdefault("customer_credit", ledger.zero(currency))
    document = dict(sorted(document.items()))
    if args.detail:
        for currency in document:
            document[currency]["items"] = [i.to_json() for i in items if i.currency == currency]
    _emit(args, document, lambda: _aging_text(args.as_of, document, items, args.detail, credit))


def _aging_text(as_of: date, document: dict[str, Any], items: list[OpenItem],
                detail: bool, credit: dict[str, str]) -> str:
    from projections.ledger import AGING_BUCKETS

    held = ("customer credit held (payments beyond what their documents owed; not receivable, "
            "not aged): " + ", ".join(f"{c} {a}" for c, a in credit.items())) if credit else ""
    if not document:
        return "\n".join([f"no open receivables at the end of {as_of}"] + ([held] if held else []))
    head = ["currency", *AGING_BUCKETS, "total"]
    out = [f"AR aging at the end of {as_of} (days past due)",
           table(head, [[c, *(b[k] for k in head[1:])] for c, b in document.items()])]
    if held:
        out.append(held)
    if detail:
        rows = [[i.number, i.document_type, i.customer_id, i.due_date,
                 str(max(i.days_past_due, 0)),  # not yet due: 0, as in --json
                 f"{i.to_json()['open']} {i.currency}",
                 f"{i.to_json()['credited']} {i.currency}" if i.credited else "-"]
                for i in items]
        out += ["", table(["document", "type", "customer", "due", "days past due", "open",
                           "credit notes settle"], rows)]
    return "\n".join(out)


def cmd_revenue(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import revenue

    view = _caught_up(app, "revenue").view("revenue")
    with view.reading() as select:
        document: dict[str, Any] = revenue.revenue_report(select, args.as_of)
        if args.by_contract:
            for (currency, contract), f in sorted(
                    revenue.figures(select, args.as_of, by_contract=True).items()):
                document[currency].setdefault("contracts", {})[contract] = \
                    revenue.money_figures(f, currency)
    _emit(args, document, lambda: _revenue_text(args.as_of, document))


def _revenue_text(as_of: date, document: dict[str, Any]) -> str:
    if not document:
        return f"nothing billed by the end of {as_of}"
    out = [f"revenue at the end of {as_of}",
           table(["currency", "billed", "recognized", "deferred"],
                 [[c, r["billed"], r["recognized"], r["deferred"]] for c, r in document.items()])]
    for currency, r in document.items():
        f = r["roll_forward"]
        out += ["", f"{currency} deferred revenue {f['from']} to {f['through']}: opening "
                f"{f['opening_deferred']} + billed {f['billed']} - recognized {f['recognized']}"
                f" = closing {f['closing_deferred']}",
                f"{currency} recognized by month: "
                + ", ".join(f"{m} {a}" for m, a in r["by_month"].items())]
        if "contracts" in r:
            out.append(table(["contract", "billed", "recognized", "deferred"],
                             [[k, v["billed"], v["recognized"], v["deferred"]]
                              for k, v in r["contracts"].items()]))
    return "\n".join(out)


def cmd_usage_without_contract(args: argparse.Namespace, app: BillingApplication) -> None:
    app.update_meters()  # usage still in the meter backlog is listed too
    usage = [u.to_json() for u in app.store.usage_without_contract()]
    _emit(args, usage, lambda: _usage_without_contract_text(usage))


def _usage_without_contract_text(usage: list[dict[str, Any]]) -> str:
    if not usage:
        return "no usage without a contract: every customer's usage has a contract to bill it"
    customers = len({u["customer_id"] for u in usage})
    rows = [[u["customer_id"], u["metric"], str(u["events"]), u["quantity"], u["since"],
             u["latest_at"]] for u in usage]
    return "\n".join([
        f"usage of {plural(customers, 'customer')} with no contract: accepted, "
        "and billed by the first run after a contract of theirs prices it",
        table(["customer", "metric", "events", "quantity", "since", "latest"], rows)])


def cmd_explain(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import audit

    view = _caught_up(app, "audit").view("audit")
    with view.reading() as select:
        document = audit.explain(select, args.number)
    if document is None:
        raise _error(f"no invoice {args.number}; `billcycle invoices` lists the invoices")
    if args.line is not None:
        if args.line > len(document["lines"]):
            raise _error(f"{args.number} has {plural(len(document['lines']), 'line')}, "
                         f"not a line {args.line}")
        document["lines"] = [document["lines"][args.line - 1]]
    if args.usage:
        from projections.usage_trace import trace_usage

        trace_usage(app, document)
    _emit(args, document, lambda: _explain_text(document))


def _explain_text(doc: dict[str, Any]) -> str:
    inv, batch = doc["invoice"], doc["batch"]
    out = [
        f"{inv['number']} ({inv['document_type']}) total {inv['total']} {inv['currency']}, "
        f"issued {inv['issue_date']}, due {inv['due_date']}",
        f"contract {inv['contract_id']} at version {inv['contract_version']}, customer "
        f"{inv['customer_id']}",
    ]
    if batch:
        marks = ", ".join(f"{m} complete before {t}" for m, t in batch["watermarks"].items())
        out.append(
            f"batch {batch['batch_id']} (cycle date {inv['cycle_date']}), attempt "
            f"{batch['attempt']} ({batch['kind']}) started {batch['started_at']} at log "
            f"position {batch['log_position']}; usage watermarks: {marks or 'none'}")
    for line in doc["lines"]:
        terms = line["terms"]
        out += [
            "",
            f"{line['line'] + 1}. {line['kind']} {line['component_id']} "
            f"{line['period_start']} to {line['period_end']}: {line['amount']}",
            f"   {line['explanation']}",
        ]
        if terms:
            out.append(f"   priced with the terms effective {terms['effective_date']} "
                       f"(contract version {terms['version']})")
        if "counted_usage" in line:
            out += _counted_usage_text(line["counted_usage"])
    return "\n".join(out)


def _counted_usage_text(u: dict[str, Any]) -> list[str]:
    spans = u["untagged_within"]
    untagged = ("or without one" if spans is None else "or without one within "
                + " and ".join(f"{lo} to {hi}" for lo, hi in spans) if spans
                else "(none sent without one is this contract's)")
    said = (f"   usage counted: {u['metric']} sent with contract_id {u['contract_id']} "
            f"{untagged}, {u['from']} to {u['to']}, logged through position "
            f"{u['through_position']}: "
            f"{plural(len(u['events']), 'event')}, {u['aggregation']} {u['quantity']} "
            + ("(the line's quantity)" if u["agrees"]
               else f"(NOT the line's quantity {u['billed_quantity']})"))
    if "decided_by" in u:
        said += f"; {u['aggregation']} is {u['decided_by']}'s"
    if "counted_values" in u:
        said += (f"; distinct {u['unique_property']} values counted: "
                 + (", ".join(u["counted_values"]) or "none"))
    unique = "counted_values" in u
    head = ["message id", "occurred_at", "quantity", "contract_id", "log position"]
    rows = [[e["message_id"], e["occurred_at"], e["quantity"], e["contract_id"] or "-",
             str(e["log_position"])] + ([json.dumps(e["value"]),
                                         e["counts_as"] or "(not counted)"] if unique else [])
            for e in u["events"]]
    if not rows:
        return [said]
    return [said, *("   " + row for row in table(
        head + (["value", "counts as"] if unique else []), rows).splitlines())]


def cmd_batch_list(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import audit

    view = _caught_up(app, "audit").view("audit")
    with view.reading() as select:
        batches = audit.batches(select)
    rows = [[b["batch_id"], b["cycle_date"], b["started_at"], b["finished_at"] or "-",
             str(b["attempts"]), str(b["invoices"]),
             ", ".join(f"{v} {k}" for k, v in b["totals"].items())] for b in batches]
    _emit(args, batches, lambda: table(
        ["batch", "cycle date", "started", "finished", "attempts", "invoices", "totals"], rows)
        if rows else "no batches")


def cmd_batch_verify(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections.verify import verify_batch

    try:
        result = verify_batch(app, args.batch_id)
    except LookupError as exc:
        raise _error(str(exc)) from exc
    _emit(args, result.to_json(), lambda: _verify_text(result))
    if not result.identical:
        n = len(result.differences)
        raise _error(f"batch {args.batch_id}: {n} difference{'' if n == 1 else 's'} between "
                     "what it recorded and what the log recomputes")


def _verify_head(result: Verification) -> tuple[str, str]:
    """What verify's text says first: the batch's contracts, each once, and their outcomes;
    and, where attempts decided some of them again, how many outcomes were recomputed."""
    unfinished = "" if result.finished else ", unfinished"
    # The batch's contracts not invoiced, named as `batch show` names them ("not due").
    others = [f"{n} {outcome.replace('_', ' ')}" for outcome, n in result.outcomes.items()
              if n and outcome != "invoiced"]
    head = (f"batch {result.batch_id} (cycle date {result.cycle_date}{unfinished}): "
            f"{plural(result.contracts, 'contract')} in "
            f"{plural(result.attempts, 'attempt')} recomputed from the log, "
            + ", ".join([plural(result.invoices, 'invoice'), *others]))
    recorded = sum(result.contracts_by_attempt)
    if recorded == result.contracts:
        return head, ""
    by_attempt = ", ".join(map(str, result.contracts_by_attempt))
    return head, (f"\n{recorded} outcomes recorded by the {result.attempts} attempts "
                  f"({by_attempt}) for these {plural(result.contracts, 'contract')}, all "
                  "recomputed: a contract decided by more than one attempt (a retry, or two "
                  "processes on one batch id) is counted once, as invoiced where an attempt "
                  "invoiced it, else with the outcome recorded last")


def _verify_text(result: Verification) -> str:
    head, elsewhere = _verify_head(result)
    if result.billed_elsewhere:
        batches = sorted({b.batch_id for b in result.billed_elsewhere})
        elsewhere += (f"\n{plural(len(result.billed_elsewhere), 'contract')} found nothing due "
                      f"because batch {', '.join(batches)} of the same cycle date invoiced them "
                      "after the attempt started (two runs at once; the attempt that invoiced "
                      "them checks those invoices)")
    if result.changed_during_batch:
        named = ", ".join(c.contract_id for c in result.changed_during_batch[:5])
        more = len(result.changed_during_batch) - 5
        elsewhere += (f"\n{plural(len(result.changed_during_batch), 'contract')} changed while "
                      f"the batch ran ({named}{f' and {more} more' if more > 0 else ''}): "
                      "their usage or terms were logged after the attempt started; billed "
                      "again from the log as the run had read it when it decided them, they "
                      "are the same")
    if not result.finished:
        resume = (f"billcycle retry {result.batch_id}" if result.last_attempt == "retry" else
                  resume_command(result.cycle_date, result.batch_id))
        elsewhere += (f"\nthe batch never finished: its last attempt ({result.last_attempt}) "
                      "recorded no end (interrupted, or still running), so only the outcomes "
                      f"it recorded were verified; to finish it: {resume}")
    if result.identical:
        return f"{head}: all identical{elsewhere}"
    rows = [[d.contract_id, d.number or "-", d.what, str(d.to_json()["recorded"]),
             str(d.to_json()["recomputed"])] for d in result.differences]
    return "\n".join([f"{head}: DIFFERENT{elsewhere}", table(
        ["contract", "invoice", "what", "recorded", "recomputed"], rows)])


# --- collections -----------------------------------------------------------------------------


# A contract's day is its own timezone's, up to 14 hours ahead of UTC: there today may be
# UTC's tomorrow, and an action sent then is dated so. No later day has come anywhere.
RECORD_AHEAD = timedelta(days=1)


def _refuse_recording_ahead(as_of: date) -> None:
    """`--record` states that the actions went out on D: a D still to come would use up the
    reminders due by then, never to be listed or sent (QA H3), and nothing withdraws them."""
    from infra.cli import UserError, today

    day = today()
    if as_of > day + RECORD_AHEAD:
        raise UserError(
            f"collections --record --as-of {as_of}: that day has not come (today is {day} "
            "UTC); record actions on the day they are sent, or list them without --record")


def cmd_collections(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import collections

    as_of = args.as_of
    if args.record:
        _refuse_recording_ahead(as_of)
    projections = _caught_up(app, "collections", "ledger")
    with projections.view("collections").reading() as select, \
            projections.view("ledger").reading() as ledger_select:
        then = collections.listing(select, ledger_select, as_of)
        # Recording says an action went out on D: only one that still stands on everything
        # the books hold, or a past D would chase customers who have paid since (QA L4).
        now = collections.listing(select, ledger_select, as_of, date.max) if args.record \
            else None
    due, changed = collections.still_standing(then, now, as_of) if now else (then.send, [])
    recorded = 0
    if args.record and due:
        recorded = collections.record_actions(app, due, as_of)
        projections.catch_up()
    document = {"as_of": as_of.isoformat(), "recorded": recorded if args.record else None,
                "actions": [a.to_json(as_of) for a in due],
                "withheld": [a.to_json(as_of) for a in then.withheld],
                "not_recorded": [{**a.to_json(as_of), "why": why} for a, why in changed]
                if args.record else None}
    _emit(args, document, lambda: _collections_text(document))


def _collections_text(doc: dict[str, Any]) -> str:
    out = []
    if doc["actions"]:
        rows = [[a["due_on"], a["kind"], a["number"], a["customer_id"],
                 f"{a['to_collect']} {a['currency']}", f"{a['customer_owes']} {a['currency']}",
                 str(a["days_overdue"])] for a in doc["actions"]]
        out.append(table(["due on", "action", "invoice", "customer", "to collect",
                          "customer owes net", "days overdue"], rows))
    else:
        out.append(f"no collection actions due by {doc['as_of']}"
                   + (" that still stand" if doc["not_recorded"] else ""))
    if doc["withheld"]:
        out.append("withheld, the customer's credit notes settling the invoice or the customer "
                   "owing nothing net (its credit notes and credit cover its open invoices): "
                   + ", ".join(f"{a['kind']} on {a['number']} ({a['customer_id']}, credit notes "
                               f"settle {a['credited']}, owes {a['customer_owes']} "
                               f"{a['currency']} net)" for a in doc["withheld"]))
    if doc["not_recorded"]:
        out.append(f"not recorded, due on {doc['as_of']} but changed since (`collections "
                   "--as-of` a later day lists what is due now): "
                   + ", ".join(f"{a['step']} on {a['number']} ({a['why']})"
                               for a in doc["not_recorded"]))
    if doc["recorded"] is not None:
        out.append(f"recorded {doc['recorded']} actions as sent on {doc['as_of']}")
    return "\n".join(out)


# --- projections -----------------------------------------------------------------------------


def cmd_project(args: argparse.Namespace, app: BillingApplication) -> None:
    projections = _projections(app, args.projection or (), args)
    if not args.follow:
        _report_counts(args, projections, projections.catch_up, "caught up")
        return
    stop = threading.Event()
    for stopping in (signal.SIGTERM, signal.SIGINT):  # finish the page in hand, then stop
        signal.signal(stopping, lambda *_: stop.set())
    if not args.json:
        print(f"following the log into {', '.join(projections.views)}; stop with Ctrl-C",
              file=sys.stderr)
    _report_counts(args, projections, lambda: projections.follow(stop, args.interval),
                   "followed")


def cmd_replay(args: argparse.Namespace, app: BillingApplication) -> None:
    projections = _projections(app, args.projection or (), args)
    _report_counts(args, projections, projections.replay, "rebuilt")


def _report_counts(args: argparse.Namespace, projections: Projections,
                   work: Callable[[], dict[str, int]], verb: str) -> None:
    started = time.monotonic()
    counts = work()
    seconds = time.monotonic() - started
    views = {name: {"events": counts.get(name, 0), "position": projections.view(name).position()}
             for name in projections.views}
    document: dict[str, Any] = {"seconds": round(seconds, 3), "projections": views,
                                "events_read": projections.events_read}
    process = projections.process
    processed = {"events": counts.get(process.name, 0), "position": process.position()}
    document["collections_process"] = processed
    _emit(args, document, lambda: "\n".join(
        [f"{name}: {verb} to log position {d['position']} ({d['events']} events)"
         for name, d in views.items()]
        + [f"collections process: at log position {processed['position']} "
           f"({processed['events']} events)",
           f"in {seconds:.2f} s"]))


# --- export ----------------------------------------------------------------------------------


def cmd_export_beancount(args: argparse.Namespace, app: BillingApplication) -> None:
    from projections import beancount

    projections = _caught_up(app, "ledger", "revenue")
    with projections.view("ledger").reading() as ledger_select, \
            projections.view("revenue").reading() as revenue_select:
        text = "\n".join(beancount.export(ledger_select, revenue_select, args.as_of)) + "\n"
    if args.output is None and not args.json:
        sys.stdout.write(text)
        return
    document: dict[str, Any] = {"as_of": args.as_of.isoformat() if args.as_of else None}
    if args.output is None:
        document["beancount"] = text
    else:
        try:
            with open(args.output, "w", encoding="utf-8") as out:
                out.write(text)
        except OSError as exc:
            raise _error(f"cannot write {args.output}: {exc.strerror}") from exc
        document["file"] = args.output
    _emit(args, document, lambda: f"wrote the Beancount ledger to {args.output}")
