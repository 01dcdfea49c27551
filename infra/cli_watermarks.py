"""`billcycle watermarks`: each metric's watermark sources and their marks; `watermarks
retire`: a source that will send no more bounds its metric no more (domain/inbox.py,
`UsageWatermarks.retire`)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from domain.application import BillingApplication, ConcurrentUpdate
from domain.inbox import Retirement, RetirementRejected, shown_source, watermarks_listing
from domain.reasons import escaped
from infra.cli_usage import os_user
from infra.text import table

if TYPE_CHECKING:
    from infra.cli import Subcommands


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
    from infra.cli import Subcommands

    p = sub.add_parser(
        "watermarks", help="each metric's watermark sources, their marks, the retired ones",
        description="Each metric with a watermark: how far its usage is complete (as far as "
        "its slowest active source says), each source's mark, and the sources retired, with "
        "when, by whom and why.")
    p.set_defaults(handler=cmd_watermarks)
    watermarks = Subcommands(p.add_subparsers(
        dest="watermarks_command", required=False, metavar="SUBCOMMAND"), sub.common)
    p = watermarks.add_parser(
        "retire", help="a source that will send no more bounds its metric no more",
        description="A metric is complete only as far as its slowest source says, so a "
        "producer decommissioned (or one that sent a watermark by mistake) holds every invoice "
        "pricing the metric. Retire it: the metric is then complete as far as its slowest "
        "active source says (with none left, it stays where it was), and `billcycle retry "
        "BATCH_ID` bills what it held. The retirement is kept in the log, and every batch "
        "records it. A retired source that sends a watermark again is active again.")
    p.add_argument("--metric", required=True,
                   help="the metric, as the source's watermarks name it")
    p.add_argument("--source", required=True,
                   help="as its watermarks name it ('' for those sent without source)")
    p.add_argument("--reason", required=True, help="why it will send no more")
    p.add_argument("--by", default=None, help="who retires it (default: the OS user)")
    p.set_defaults(handler=cmd_retire)


def cmd_watermarks(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import emit

    listing = watermarks_listing(app.watermarks())
    emit(args, listing, lambda: _listing_text(listing))


def _listing_text(listing: list[dict[str, Any]]) -> str:
    if not listing:
        return "no watermarks: every metric is complete at its periods' ends"
    rows = []
    for m in listing:
        for s in m["sources"]:
            if s["retired"] is not None:
                r = s["retired"]
                status = f"retired {r['at']} by {r['by']}: {r['reason']}"
            else:
                status = "active, the slowest" if s["slowest"] else "active"
            rows.append([m["metric"], m["complete_through"], shown_source(s["source"]),
                         s["complete_through"], escaped(status)])
    return table(["metric", "complete before", "source", "its mark", "status"], rows)


def cmd_retire(args: argparse.Namespace, app: BillingApplication) -> None:
    from infra.cli import UserError, emit

    by = args.by if args.by is not None else os_user()
    try:
        done = app.retire_watermark_source(args.metric, args.source, args.reason, by,
                                           datetime.now(UTC))
    except (RetirementRejected, ConcurrentUpdate) as exc:
        raise UserError(str(exc)) from exc
    emit(args, {**done.retired.to_json(), "recorded": done.recorded,
                "metric_complete_through": done.now.isoformat(),
                "was_complete_through": done.was.isoformat(),
                "active_sources": sorted(done.active)}, lambda: _retired_text(done))


def _retired_text(done: Retirement) -> str:
    r = done.retired
    metric, source = escaped(r.metric), shown_source(r.source)
    if not done.recorded:
        return (f"source {source} of {metric} is already retired (on {r.at.isoformat()} by "
                f"{escaped(r.by)}: {escaped(r.reason)}); nothing recorded")
    said = (f"retired: source {source} of {metric} (its mark {r.complete_through.isoformat()}) "
            f"bounds it no more ({escaped(r.reason)}; by {escaped(r.by)})")
    if not done.active:
        return (f"{said}\n  {metric} has no active source now: it stays complete only before "
                f"{done.now.isoformat()}, where it was, until a source sends a watermark; "
                "periods ending after that stay held (docs/accounting.md, Usage completeness)")
    moved = (f"is still complete only before {done.now.isoformat()}" if done.now == done.was
             else f"is now complete before {done.now.isoformat()} (was before "
             f"{done.was.isoformat()})")
    return (f"{said}\n  {metric} {moved}, as far as the slowest of its active sources ("
            + ", ".join(shown_source(s) for s in sorted(done.active))
            + ") says; invoices held for it bill on `billcycle retry BATCH_ID`, later runs as "
            "they go")
