"""`billcycle usage acknowledge`, `usage acknowledged` and `usage unacknowledge`: unbilled
usage an operator has looked at and acknowledged as not to be billed
(domain/acknowledgements.py); `usage assign`, `usage assigned` and `usage unassign`: untagged
usage two contracts price, assigned to one of them (domain/usage_assignments.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from domain.acknowledgements import AcknowledgementRejected
from domain.application import BillingApplication, ConcurrentUpdate
from domain.usage_assignments import AssignmentChange, AssignmentRejected
from infra.cli_args import DATE, in_calendar
from infra.text import table

if TYPE_CHECKING:
    from infra.cli import Subcommands


def _date_or_instant(value: str, date_means: str, example: str) -> date | datetime:
    try:
        if DATE.fullmatch(value):
            return in_calendar(date.fromisoformat(value), value)
        instant = datetime.fromisoformat(value)  # Python 3.11 reads a "Z" offset too
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a date (YYYY-MM-DD: {date_means}) nor an instant with an "
            f"offset (e.g. {example})")
    in_calendar(instant.date(), value)
    return instant


def parse_through(value: str) -> datetime:
    """An instant with an offset, or a date: through the end of that day, UTC."""
    found = _date_or_instant(value, "through the end of that day, UTC", "2026-11-01T00:00:00Z")
    if not isinstance(found, datetime):
        return datetime.combine(found + timedelta(days=1), time(), UTC)
    return found.astimezone(UTC)


def parse_bound(value: str) -> date | datetime:
    """A date (local midnight in the contract's timezone) or an instant with an offset."""
    return _date_or_instant(value, "local midnight in the contract's timezone",
                            "2026-10-01T00:00:00Z")


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
    from infra.cli import Subcommands

    usage = Subcommands(sub.add_parser(
        "usage", help="acknowledge unbilled usage, or assign untagged usage to a contract"
    ).add_subparsers(
        dest="usage_command", required=True, metavar="SUBCOMMAND"), sub.common)
    p = usage.add_parser(
        "acknowledge", help="a customer's unbilled usage of a metric, through an instant, "
        "is not to be billed: runs stop naming it",
        description="Every billing run names usage that no contract bills (after a "
        "termination, in periods whose terms do not price it, sent with a contract_id that "
        "prices none of it). Acknowledge what you have looked at: runs then name only the "
        "customer's usage of the metric from the meter bucket holding --through on. Nothing "
        "is deleted or billed differently, and the acknowledgement stays in the log.")
    _customer_and_metric(p)
    p.add_argument("--through", required=True, type=parse_through,
                   metavar="YYYY-MM-DD|INSTANT",
                   help="usage before this instant (a date: through the end of that day, UTC)")
    p.add_argument("--reason", required=True, help="why it is not to be billed")
    p.add_argument("--by", default=None, help="who acknowledges it (default: the OS user)")
    p.set_defaults(handler=cmd_acknowledge)
    p = usage.add_parser("acknowledged", help="the acknowledgements in force")
    p.set_defaults(handler=cmd_acknowledged)
    p = usage.add_parser(
        "unacknowledge", help="take back an acknowledgement: runs name that usage again",
        description="Withdraw the acknowledgement in force of a customer's usage of a metric "
        "(given by mistake, or too wide: to narrow one, acknowledge again with an earlier "
        "--through). Runs then name all of that usage again. Billing is unchanged, and the log "
        "keeps the acknowledgement and its withdrawal.")
    _customer_and_metric(p)
    p.add_argument("--reason", required=True, help="why it is taken back")
    p.add_argument("--by", default=None, help="who takes it back (default: the OS user)")
    p.set_defaults(handler=cmd_unacknowledge)
    p = usage.add_parser(
        "assign", help="untagged usage two contracts price is one contract's, from..to",
        description="Where a customer has two active contracts pricing a metric, usage sent "
        "without contract_id holds both invoices. Say whose it is: runs then bill the "
        "customer's untagged usage of the metric in [--from, --to) to --contract and leave "
        "it out of the others. Windows of one customer and metric may not overlap; the same "
        "window again replaces its assignment. Then `billcycle retry BATCH_ID`.")
    _customer_and_metric(p)
    p.add_argument("--contract", required=True, metavar="CONTRACT_ID",
                   help="the contract that bills the window's untagged usage")
    p.add_argument("--from", dest="start", required=True, type=parse_bound,
                   metavar="YYYY-MM-DD|INSTANT", help="first instant (a date: local midnight "
                   "in the contract's timezone)")
    p.add_argument("--to", dest="end", required=True, type=parse_bound,
                   metavar="YYYY-MM-DD|INSTANT", help="end, excluded (a date: as --from)")
    p.add_argument("--reason", required=True, help="why the usage is this contract's")
    p.add_argument("--by", default=None, help="who assigns it (default: the OS user)")
    p.set_defaults(handler=cmd_assign)
    p = usage.add_parser("assigned", help="untagged usage assigned to contracts")
    p.set_defaults(handler=cmd_assigned)
    p = usage.add_parser(
        "unassign", help="take back an assignment: its untagged usage holds invoices again",
        description="Withdraw the assignment of a customer's untagged usage of a metric whose "
        "window starts at --from. Its untagged usage holds invoices again until assigned anew; "
        "contracts that invoiced it price those periods again at their next run.")
    _customer_and_metric(p)
    p.add_argument("--from", dest="start", required=True, type=parse_bound,
                   metavar="YYYY-MM-DD|INSTANT", help="the start of the window, as assigned")
    p.add_argument("--contract", default=None, metavar="CONTRACT_ID",
                   help="the contract the window was given to: needed where a date is local "
                   "midnight of two windows' contracts in different timezones")
    p.set_defaults(handler=cmd_unassign)


def _customer_and_metric(p: argparse.ArgumentParser) -> None:
    """The usage a subcommand is about: one customer's, of one metric."""
    p.add_argument("--customer", required=True, metavar="CUSTOMER_ID",
                   help="the customer_id the usage was sent with")
    p.add_argument("--metric", required=True, help="the metric, as the usage names it")


def cmd_acknowledge(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    by = args.by if args.by is not None else os_user()
    replaced = next((a for a in app.usage_acknowledgements()
                     if (a.customer_id, a.metric) == (args.customer, args.metric)), None)
    now = datetime.now(UTC)
    try:
        given = app.acknowledge_usage(args.customer, args.metric, args.through, args.reason,
                                      by, now)
    except (AcknowledgementRejected, ConcurrentUpdate) as exc:
        raise UserError(str(exc)) from exc
    said = [f"acknowledged: usage of {given.customer_id}'s {given.metric} before "
            f"{given.through:%Y-%m-%d %H:%M} UTC is not to be billed ({given.reason}; by "
            f"{given.by}); runs name only the usage after it"]
    if replaced is not None:  # the latest is in force, wider or narrower
        said.append(f"  it replaces the one before {replaced.through:%Y-%m-%d %H:%M} UTC "
                    f"({replaced.reason}; by {replaced.by})")
    if given.through > now:
        said.append("  its instant is in the future: usage sent until then will not be named "
                    "either")
    if not app.knows_customer(given.customer_id):  # a typo, or usage yet to come: not refused
        print(f"billcycle: warning: no contract or usage of customer {given.customer_id} in "
              "this store yet, so the acknowledgement matches nothing now; check the id (a "
              "mistyped one is taken back with `billcycle usage unacknowledge`)",
              file=sys.stderr)
    emit(args, given.to_json(), lambda: "\n".join(said))


def os_user() -> str:
    """Who runs the command, as the OS knows them; "" (recorded as unknown) where it does not
    (a container's user with no passwd entry and no USER or LOGNAME)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def cmd_acknowledged(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import emit

    given = [a.to_json() for a in app.usage_acknowledgements()]
    emit(args, given, lambda: table(
        ["customer", "metric", "through", "reason", "by", "at"],
        [[a["customer_id"], a["metric"], a["through"], a["reason"], a["by"], a["at"]]
         for a in given]) if given else "no acknowledgements")


def cmd_unacknowledge(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    by = args.by if args.by is not None else os_user()
    try:
        taken = app.withdraw_usage_acknowledgement(args.customer, args.metric, args.reason, by,
                                                   datetime.now(UTC))
    except (AcknowledgementRejected, ConcurrentUpdate) as exc:
        raise UserError(str(exc)) from exc
    emit(args, taken.to_json(), lambda: (
        f"withdrawn: usage of {taken.customer_id}'s {taken.metric} before "
        f"{taken.through:%Y-%m-%d %H:%M} UTC is no longer acknowledged ({taken.reason}; by "
        f"{taken.by}); runs name it again"))


def cmd_assign(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    by = args.by if args.by is not None else os_user()
    try:
        change = app.assign_usage(args.customer, args.metric, args.contract, args.start,
                                  args.end, args.reason, by, datetime.now(UTC))
    except (AssignmentRejected, ConcurrentUpdate) as exc:
        raise UserError(str(exc)) from exc
    given = change.assignment
    emit(args, {**given.to_json(), "repriced": list(change.repriced)}, lambda: (
        f"assigned: untagged usage of {given.customer_id}'s {given.metric} from "
        f"{given.start:%Y-%m-%d %H:%M} to {given.end:%Y-%m-%d %H:%M} UTC is "
        f"{given.contract_id}'s ({given.reason}; by {given.by}); invoices held for it bill it "
        "on `billcycle retry BATCH_ID`, later runs as they go" + _repriced(change)))


def cmd_assigned(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import emit

    given = [a.to_json() for a in app.usage_assignments()]
    emit(args, given, lambda: table(
        ["customer", "metric", "from", "to", "contract", "reason", "by", "at"],
        [[a["customer_id"], a["metric"], a["start"], a["end"], a["contract_id"], a["reason"],
          a["by"], a["at"]] for a in given]) if given else "no assignments")


def cmd_unassign(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    try:
        change = app.withdraw_usage_assignment(args.customer, args.metric, args.start,
                                               args.contract)
    except (AssignmentRejected, ConcurrentUpdate) as exc:
        raise UserError(str(exc)) from exc
    taken = change.assignment
    emit(args, {**taken.to_json(), "repriced": list(change.repriced)}, lambda: (
        f"withdrawn: untagged usage of {taken.customer_id}'s {taken.metric} from "
        f"{taken.start:%Y-%m-%d %H:%M} to {taken.end:%Y-%m-%d %H:%M} UTC is no longer "
        f"{taken.contract_id}'s; runs hold it again until it is assigned" + _repriced(change)))


def _repriced(change: AssignmentChange) -> str:
    if not change.repriced:
        return ""
    return (f"; {' and '.join(change.repriced)} invoiced usage of it: "
            f"{'each prices' if len(change.repriced) > 1 else 'it prices'} those periods again "
            "at its next run for a later cycle date (a retry of the batch that invoiced them "
            "does not), crediting usage no longer its own and billing usage now its own")
