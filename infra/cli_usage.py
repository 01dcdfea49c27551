"""`billcycle usage acknowledge` and `usage acknowledged`: unbilled usage an operator has
looked at and acknowledged as not to be billed (domain/acknowledgements.py)."""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from domain.acknowledgements import AcknowledgementRejected
from domain.application import BillingApplication, ConcurrentUpdate
from infra.cli_args import DATE
from infra.text import table

if TYPE_CHECKING:
    from infra.cli import Subcommands


def parse_through(value: str) -> datetime:
    """An instant with an offset, or a date: through the end of that day, UTC."""
    try:
        if DATE.fullmatch(value):
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1), time(), UTC)
        instant = datetime.fromisoformat(value)  # Python 3.11 reads a "Z" offset too
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a date (YYYY-MM-DD: through the end of that day, UTC) nor "
            "an instant with an offset (e.g. 2026-11-01T00:00:00Z)")
    return instant.astimezone(UTC)


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
    from infra.cli import Subcommands

    usage = Subcommands(sub.add_parser(
        "usage", help="acknowledge unbilled usage that is not to be billed").add_subparsers(
        dest="usage_command", required=True, metavar="SUBCOMMAND"), sub.common)
    p = usage.add_parser(
        "acknowledge", help="a customer's unbilled usage of a metric, through an instant, "
        "is not to be billed: runs stop naming it",
        description="Every billing run names usage that no contract bills (after a "
        "termination, in periods whose terms do not price it, sent with a contract_id that "
        "prices none of it). Acknowledge what you have looked at: runs then name only the "
        "customer's usage of the metric from the meter bucket holding --through on. Nothing "
        "is deleted or billed differently, and the acknowledgement stays in the log.")
    p.add_argument("--customer", required=True, metavar="CUSTOMER_ID")
    p.add_argument("--metric", required=True)
    p.add_argument("--through", required=True, type=parse_through,
                   metavar="YYYY-MM-DD|INSTANT",
                   help="usage before this instant (a date: through the end of that day, UTC)")
    p.add_argument("--reason", required=True, help="why it is not to be billed")
    p.add_argument("--by", default=None, help="who acknowledges it (default: the OS user)")
    p.set_defaults(handler=cmd_acknowledge)
    p = usage.add_parser("acknowledged", help="the acknowledgements in force")
    p.set_defaults(handler=cmd_acknowledged)


def cmd_acknowledge(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    by = args.by if args.by is not None else _os_user()
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
    emit(args, given.to_json(), lambda: "\n".join(said))


def _os_user() -> str:
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
