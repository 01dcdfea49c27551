"""The `billcycle` command line: the composition root that wires store, pipeline and runs."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, closing, nullcontext
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, NoReturn

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from domain.application import BillingApplication
from domain.billing_run import BatchConflict, BillingRun, billing_run_id
from domain.billing_runs import (
    CHUNK_SIZE,
    BillingRuns,
    RunReport,
    far_ahead_warning,
    resume_command,
)
from domain.reasons import first_line
from infra import cli_demo, cli_kafka, cli_reports, cli_usage, cli_watermarks, text
from infra.cli_args import BATCH_ID_HELP, Parser, parse_date, positive_int
from infra.collector import freeze_for_exit, tuned_for_bulk_work
from infra.store.url import IN_MEMORY, NoStore, redacted, store_env
from infra.views import batch_view, invoice_view

DEFAULT_DB = "sqlite:///billcycle.db"


class UserError(Exception):
    """A command that cannot do its job, with the one-line reason to print and its exit code
    (1 unless a command documents another)."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


def open_app(url: str, *, create: bool, named_by: str = "--db") -> BillingApplication:
    """The store at `url`; one not there is made only where `create` (the commands that bring
    input), else refused in a line naming the setting (`named_by`) that gave the URL."""
    try:
        env = store_env(url, create=create)
        _reachable(env)
        return BillingApplication(env=env)
    except NoStore as exc:
        where = redacted(url) if url.startswith("postgres") else _sqlite_path(url)
        raise UserError(
            f"no billcycle store at {where} ({exc}); check {named_by}, or make the store by "
            "bringing input (billcycle ingest FILE, billcycle consume)") from exc
    except (ValueError, OSError) as exc:  # a bad URL; settings the stores refuse
        raise UserError(str(exc)) from exc
    except (InterfaceError, OperationalError) as exc:  # no database there to open
        hint = ("is PostgreSQL running there, and may this user connect to that database?"
                if url.startswith("postgres") else
                "another command has held it for longer than the lock timeout; try again when "
                "it is done" if "locked" in str(exc) else
                "does its directory exist, and may this user write in it?")
        raise UserError(f"cannot open the store {redacted(url)}: {exc}; {hint}") from exc


# How long one attempt to reach PostgreSQL may take before a command gives up: the library's
# pool retries for its own timeout (30 s) however soon the server refuses.
CONNECT_SECONDS = 10


def _reachable(env: dict[str, str]) -> None:
    """Fail at once where PostgreSQL refuses the connection (stopped, wrong port, unknown
    database or user), with its reason, rather than after the pool's retries."""
    if "POSTGRES_HOST" not in env:
        return
    import psycopg

    try:
        psycopg.connect(
            dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"], connect_timeout=CONNECT_SECONDS).close()
    except psycopg.OperationalError as exc:
        said = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise OperationalError(" ".join(said)) from exc


def _sqlite_path(url: str) -> str | None:
    try:
        return store_env(url).get("SQLITE_DBNAME", "")
    except ValueError:  # a bad URL: open_app says why
        return None


def _in_memory(url: str) -> bool:
    """sqlite:///:memory:, private to this command and gone when it ends."""
    return (_sqlite_path(url) or "").startswith(IN_MEMORY)


def _refuse_in_memory(url: str) -> None:
    """A store in memory is new and empty at every open: only input brought to it (a check of
    that input) is not answered from an empty store."""
    if _in_memory(url):
        raise UserError(f"the store {url} is in memory: it would be empty and gone when this "
                        "command ends; give a file, e.g. sqlite:///billcycle.db")


def _named_by(args: argparse.Namespace) -> str:
    """Where the command's store URL came from, for a message asking to check it."""
    if args.db_given:
        return "--db"
    if os.environ.get("BILLCYCLE_DB"):
        return "BILLCYCLE_DB"
    return f"--db or BILLCYCLE_DB (neither is set, so the store is {DEFAULT_DB})"


# PostgreSQL's insufficient_privilege: "permission denied for schema public", "... for table
# x", "must be owner of table x" (an index a later version adds to a store another role made).
INSUFFICIENT_PRIVILEGE = "42501"


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the driver's error behind `exc` (the library wraps psycopg's)."""
    cause: BaseException | None = exc
    while cause is not None:
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state
        cause = cause.__cause__ or cause.__context__
    return None


def _unusable(args: argparse.Namespace, exc: ProgrammingError) -> str:
    """Why the store's tables could not be used, and what to do: a role without the rights is
    given them or replaced; tables of the same names that billcycle did not make are left to
    their application."""
    if _sqlstate(exc) == INSUFFICIENT_PRIVILEGE:
        env = store_env(args.db)
        role, database = env["POSTGRES_USER"], env["POSTGRES_DBNAME"]
        return (f"the PostgreSQL role {role} may not make or use billcycle's tables in the "
                f"database {database} ({redacted(args.db)}): {first_line(exc)}; connect as the "
                f"role that owns them (the one that made the store; check {_named_by(args)}), "
                "or, for a store not made yet, have the database's owner run GRANT CREATE, "
                f"USAGE ON SCHEMA public TO {role} in {database}")
    return (f"the store {redacted(args.db)} holds tables billcycle cannot use: "
            f"{first_line(exc)}; give it a database of its own (an empty one, or one it made)")


# For tests and demos that act as of fixed dates: the day the commands take as today.
TODAY_ENV = "BILLCYCLE_TODAY"


def now() -> datetime:
    """The wall clock: the one place the commands read it (domain/ is given it)."""
    return datetime.now(UTC)


def today() -> date:
    """Today in UTC, or the YYYY-MM-DD day in $BILLCYCLE_TODAY (for tests and demos only)."""
    fixed = os.environ.get(TODAY_ENV)
    if not fixed:
        return now().date()
    try:
        return parse_date(fixed)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"${TODAY_ENV}: {exc}; unset it to use the clock") from exc


# Batch ids appear in commands the reports suggest, in Kafka messages and in file names:
# letters, digits and . _ : - only, so that they never need quoting.
BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


def parse_batch_id(value: str) -> str:
    if not BATCH_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a batch id; use 1 to 100 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit (e.g. B-2026-12-eu)")
    return value


def emit(args: argparse.Namespace, document: Any, render: Callable[[], str]) -> None:
    if args.json:
        json.dump(document, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render() + "\n")


def open_input(args: argparse.Namespace) -> AbstractContextManager[BinaryIO]:
    """The file to ingest, opened before the store is: a missing or unreadable one made an
    empty store, which later commands then answered from instead of refusing the path."""
    if args.file == "-":
        return nullcontext(sys.stdin.buffer)
    try:
        return open(args.file, "rb")
    except OSError as exc:
        raise _unreadable(args.file, exc) from exc


def _unreadable(path: str, exc: OSError) -> UserError:
    return UserError(f"cannot read {path}: {exc.strerror}; check the path (or give - to read "
                     "standard input)")


def cmd_ingest(args: argparse.Namespace, app: BillingApplication) -> None:
    from consumers.pipeline import IngestPipeline

    pipeline = IngestPipeline(app)
    source = "stdin" if args.file == "-" else f"file:{os.path.basename(args.file)}"
    try:
        with tuned_for_bulk_work():
            report = pipeline.process_lines(args.input, source)
    except OSError as exc:  # failed while reading (an I/O error, a file truncated meanwhile)
        raise _unreadable(args.file, exc) from exc
    document = {
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "rejected": [
            {"source": r.origin.source, "position": r.origin.position, "reason": r.reason}
            for r in report.rejected
        ],
        "notes": report.notes,
    }
    if _in_memory(args.db):
        document["notes"] = [*report.notes, (
            f"the store {args.db} is in memory: nothing was kept (a check of the input); give "
            "a file to keep it, e.g. --db sqlite:///billcycle.db")]
    emit(args, document, lambda: text.ingest_summary(document))


def progress_bar(args: argparse.Namespace) -> Callable[[int, int], None] | None:
    if args.json or not sys.stderr.isatty():
        return None
    return text.ProgressBar(sys.stderr).update


def _report_document(app: BillingApplication, report: RunReport) -> dict[str, Any]:
    ahead = far_ahead_warning(report, today())
    if ahead:
        report.warnings.append(ahead)
    document = report.to_json()
    document["invoice_numbers"] = [i.number for i in report.invoices]
    loud = [report.backdated.warning(report.attempt) if report.backdated else None, ahead]
    for warning in filter(None, loud):  # on stderr whatever the output, and in the summary
        print(f"billcycle {'retry' if report.attempt == 'retry' else 'run'}: warning: "
              f"{warning}", file=sys.stderr, flush=True)
    return document


def cmd_run(args: argparse.Namespace, app: BillingApplication) -> None:
    with tuned_for_bulk_work():
        _run(args, app)


def _run(args: argparse.Namespace, app: BillingApplication) -> None:
    runs = BillingRuns(app, now, chunk_size=args.chunk_size,
                       input_manifest=cli_kafka.input_manifest(args, app))
    try:
        report = runs.run(args.cycle_date, args.batch_id, args.dry_run, progress_bar(args),
                          started=_batch_started)
    except BatchConflict as exc:  # a batch id reused for another cycle date
        raise UserError(str(exc)) from exc
    except IntegrityError as exc:
        raise _written_meanwhile(args.batch_id) from exc
    # Exit 0 (nothing was due), but most likely the wrong store: said, as for a typo of --db.
    if not report.outcomes and not app.store.contract_ids(None, 1):
        print(f"billcycle run: note: {redacted(args.db)} holds no contracts, so there is "
              f"nothing to bill; if contracts were ingested, it was into another store: check "
              f"{_named_by(args)}", file=sys.stderr, flush=True)
    document = _report_document(app, report)
    if args.dry_run:
        document["drafts"] = [invoice_view(i) for i in report.drafts]
    emit(args, document, lambda: text.run_summary(report))


def _batch_started(run: BillingRun, unfinished: list[BillingRun]) -> None:
    """Said on stderr once the batch is saved, so that a run killed before its summary has
    told the operator which batch to finish, and which others of the date were left so."""
    attempts = len(run.attempts)
    began = "started" if attempts == 1 else f"resumed (attempt {attempts})"
    others = "" if not unfinished else (
        f"; other batches of this cycle date never finished: "
        f"{', '.join(b.batch_id for b in unfinished)} (the summary says how to finish them)")
    command = resume_command(run.cycle_date, run.batch_id)
    print(f"{datetime.now(UTC):%H:%M:%S} billcycle run: batch {run.batch_id} for cycle date "
          f"{run.cycle_date.isoformat()} {began}; should this run stop before its summary, "
          f"finish the batch with `{command}`{others}", file=sys.stderr, flush=True)


def cmd_retry(args: argparse.Namespace, app: BillingApplication) -> None:
    try:
        runs = BillingRuns(app, now, input_manifest=cli_kafka.input_manifest(args, app))
        report = runs.retry(args.batch_id, progress_bar(args))
    except LookupError as exc:
        raise UserError(str(exc)) from exc
    except IntegrityError as exc:
        raise _written_meanwhile(args.batch_id) from exc
    emit(args, _report_document(app, report), lambda: text.run_summary(report))


def _written_meanwhile(batch_id: str | None) -> UserError:
    """Another process wrote the same batch at the same moment (two runs of one batch id, or
    a retry during its run): the batch's own events conflicted, never an invoice."""
    batch = batch_id or "the batch"
    return UserError(
        f"{batch} was written by another process at the same moment (two runs or a retry of "
        f"one batch id at once); nothing was billed twice: when the other is done, `billcycle "
        f"batch show {batch}` says what it billed and `billcycle retry {batch}` bills the rest")


def cmd_invoices(args: argparse.Namespace, app: BillingApplication) -> None:
    # A mistyped id named nothing and looked like "issued nothing": say it names nothing.
    if args.batch is not None:
        _batch(app, args.batch)
    if args.contract is not None and app.contract(args.contract) is None:
        raise UserError(f"no contract {args.contract}; check the id (`billcycle invoices` "
                        "lists every contract invoiced)")
    views = [
        invoice_view(i) for i in app.invoices()
        if (args.batch is None or i.batch_id == args.batch)
        and (args.contract is None or i.contract_id == args.contract)
    ]
    emit(args, views, lambda: text.invoice_table(views))


def _batch(app: BillingApplication, batch_id: str) -> BillingRun:
    run = app.get_or_none(billing_run_id(batch_id), BillingRun)
    if run is None:
        raise UserError(f"no batch {batch_id}; `billcycle batch list` shows them")
    return run


def cmd_batch_show(args: argparse.Namespace, app: BillingApplication) -> None:
    view = batch_view(_batch(app, args.batch_id))
    emit(args, view, lambda: text.batch_report(view))


def cmd_deadletters(args: argparse.Namespace, app: BillingApplication) -> None:
    letters = app.dead_letters()
    emit(args, letters, lambda: text.dead_letter_table(letters))


class Subcommands:
    """Subparsers that all accept the common options; command modules add theirs here."""

    def __init__(self, action: Any, common: argparse.ArgumentParser) -> None:
        self.action = action
        self.common = common

    def add_parser(self, name: str, db_help: str | None = None, **kwargs: Any
                   ) -> argparse.ArgumentParser:
        """A command's parser; `db_help` for one whose --db is not the everyday store's."""
        common = self.common if db_help is None else common_options(db_help)
        parser: argparse.ArgumentParser = self.action.add_parser(
            name, parents=[common], **kwargs)
        parser.set_defaults(command_parser=parser)  # the innermost command's wins
        return parser


DB_HELP = (f"store URL: sqlite:///PATH (default {DEFAULT_DB}) or "
           "postgresql://USER:PASSWORD@HOST:PORT/DB (without :PASSWORD, the one ~/.pgpass or "
           "PGPASSFILE gives; PGPASSWORD is not read); env BILLCYCLE_DB")


def common_options(db_help: str = DB_HELP) -> argparse.ArgumentParser:
    """--db and --json, which may come before or after the command; the command's copy wins."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout and nothing else there")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = Parser(
        prog="billcycle", parents=[common],
        description="Event-sourced batch billing: ingest contracts and usage, run billing, "
        "explain every batch.",
    )
    sub = Subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
                       common)

    p = sub.add_parser("ingest", help="read JSON Lines messages (- = stdin)")
    p.add_argument("file", metavar="FILE",
                   help="a JSON Lines file, one message a line (contract.md §1); - = stdin")
    p.set_defaults(handler=cmd_ingest, creates_store=True, opens_input=open_input)

    p = sub.add_parser("run", help="one billing run for a cycle date")
    p.add_argument("--cycle-date", type=parse_date, required=True, metavar="YYYY-MM-DD",
                   help="bill what each contract owes by this date (required; one more than "
                   "31 days after today is billed, with a warning)")
    p.add_argument("--batch-id", type=parse_batch_id,
                   help="default: B-<date>-<random>; an existing id resumes it")
    p.add_argument("--dry-run", action="store_true", help="report what would be issued; "
                   "write no events (usage waiting in the meter backlog is folded first, as "
                   "for any run)")
    p.add_argument("--chunk-size", type=positive_int, default=CHUNK_SIZE,
                   help=f"contracts per transaction (default {CHUNK_SIZE})")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("retry", help="retry a batch's held and failed invoices")
    p.add_argument("batch_id", metavar="BATCH_ID", help=BATCH_ID_HELP)
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("invoices", help="list invoices")
    p.add_argument("--batch", metavar="BATCH_ID",
                   help="only the invoices of this batch (default: every batch's)")
    p.add_argument("--contract", metavar="CONTRACT_ID",
                   help="only the invoices of this contract (default: every contract's)")
    p.set_defaults(handler=cmd_invoices)

    batch = Subcommands(sub.add_parser("batch", help="explain batches").add_subparsers(
        dest="batch_command", required=True, metavar="SUBCOMMAND"), common)
    p = batch.add_parser("show", help="what a batch billed, held, failed, and why")
    p.add_argument("batch_id", metavar="BATCH_ID", help=BATCH_ID_HELP)
    p.set_defaults(handler=cmd_batch_show)
    cli_reports.register_batch(batch)

    p = sub.add_parser("deadletters", help="rejected input with reasons")
    p.set_defaults(handler=cmd_deadletters)

    for register in (cli_demo.register, cli_kafka.register, cli_reports.register,
                     cli_usage.register, cli_watermarks.register):
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # said by the command's own parser, whose options and help apply
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Defaults are filled here: set_defaults would reach the subcommands' shared option
    # actions and override a value given before the command.
    args.db_given = getattr(args, "db", None) is not None
    args.db = getattr(args, "db", None) or os.environ.get("BILLCYCLE_DB", DEFAULT_DB)
    args.json = getattr(args, "json", False)
    try:
        if getattr(args, "own_store", False):
            args.handler(args, None)
        else:
            # Everything that can be refused before the store opens is: a command that makes
            # the store would otherwise leave an empty one behind as it fails.
            if hasattr(args, "check_args"):
                args.check_args(args)
            creates = getattr(args, "creates_store", False)
            if not creates:
                _refuse_in_memory(args.db)
            with ExitStack() as opened:
                if hasattr(args, "opens_input"):
                    args.input = opened.enter_context(args.opens_input(args))
                app = opened.enter_context(closing(
                    open_app(args.db, create=creates, named_by=_named_by(args))))
                args.patience = cli_kafka.command_patience(args, app)
                args.handler(args, app)
    except BrokenPipeError:
        # The reader went away (`billcycle invoices | head`): not an error of ours.
        sys.stderr.close()
        return 0
    except UserError as exc:
        print(f"billcycle: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OperationalError, InterfaceError) as exc:  # the store failed during the command
        print(f"billcycle: the store {redacted(args.db)} failed during the command: "
              f"{first_line(exc)}; each save is one transaction, so nothing is half-written: "
              "run the command again once it is back (a billing run resumes with its "
              "--batch-id, which `billcycle batch list` shows)", file=sys.stderr)
        return 1
    except ProgrammingError as exc:
        print(f"billcycle: {_unusable(args, exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("billcycle: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> NoReturn:
    """The `billcycle` command: `main()`, then the process's exit (tests call `main()`)."""
    code = main()
    freeze_for_exit()
    sys.exit(code)


if __name__ == "__main__":
    # Run as `python -m infra.cli`, this file is `__main__`; the command modules import
    # `infra.cli`. Call that module's run, so its UserError is the one they raise.
    from infra.cli import run as cli_run

    cli_run()
