"""A billing cycle through the CLI, on the embedded store and on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import billcycle, billcycle_json, billcycle_process, jsonl

CREATED = {"type": "contract.created", "occurred_at": "2026-10-01T00:00:00Z",
           "currency": "USD", "start_date": "2026-10-01", "billing_frequency": "monthly"}


def contract(cid: str, *components: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**CREATED, "id": f"m-{cid}", "contract_id": cid, "customer_id": f"cus_{cid}",
            "components": list(components), **fields}


PLATFORM = {"id": "platform", "kind": "subscription", "amount": "1000.00"}
API = {"id": "api", "kind": "usage", "metric": "api_calls", "pricing": {
    "model": "graduated", "tiers": [{"up_to": "1000", "unit_amount": "0", "flat_amount": "0"},
                                    {"up_to": None, "unit_amount": "0.002"}]}}
STORAGE = {"id": "storage", "kind": "usage", "metric": "storage_gb", "aggregation": "max",
           "pricing": {"model": "per_unit", "unit_amount": "0.10"}}


def usage(mid: str, customer: str, metric: str, quantity: str, when: str) -> dict[str, Any]:
    return {"type": "usage", "id": mid, "occurred_at": when, "customer_id": customer,
            "metric": metric, "quantity": quantity}


def watermark(mid: str, metric: str, through: str) -> dict[str, Any]:
    return {"type": "usage.watermark", "id": mid, "occurred_at": through, "metric": metric,
            "complete_through": through}


BOOK = jsonl(
    contract("ct_hybrid", PLATFORM, API),
    contract("ct_storage", STORAGE),
    contract("ct_later", PLATFORM, start_date="2026-12-01"),
    usage("u-1", "cus_ct_hybrid", "api_calls", "3500", "2026-10-03T10:00:00Z"),
    usage("u-1", "cus_ct_hybrid", "api_calls", "3500", "2026-10-03T10:00:00Z"),  # duplicate
    usage("u-2", "cus_ct_storage", "storage_gb", "40", "2026-10-10T10:00:00Z"),
    usage("u-3", "cus_ct_storage", "storage_gb", "70", "2026-10-20T10:00:00Z"),
    watermark("w-1", "api_calls", "2026-11-01T00:00:00Z"),
    watermark("w-2", "storage_gb", "2026-10-25T00:00:00Z"),  # storage lags: held
    "this is not json",
    usage("u-bad", "cus_ct_hybrid", "api_calls", "-1", "2026-10-03T10:00:00Z"),
)


def test_a_billing_cycle_through_the_cli(db: str, tmp_path: Path) -> None:
    book = tmp_path / "book.jsonl"
    book.write_bytes(BOOK)

    # Ingest: bad input is rejected with reasons and kept; the duplicate counts once.
    ingested = billcycle_json(db, "ingest", str(book))
    assert (ingested["accepted"], ingested["duplicates"]) == (8, 1)
    reasons = [r["reason"] for r in ingested["rejected"]]
    assert any("not JSON" in r for r in reasons)
    assert any("negative" in r for r in reasons)
    letters = billcycle_json(db, "deadletters")
    assert len(letters) == 2 and all(d["raw"] and d["reason"] for d in letters)
    # The same file again: its rejected lines are kept once. Other bad input at the same
    # position (stdin twice, another file of the same name) is kept too, each with its bytes.
    billcycle_json(db, "ingest", str(book))
    assert billcycle_json(db, "deadletters") == letters
    for quantity in ("-3", "-7"):
        line = usage(f"u-stdin{quantity}", "cus_ct_hybrid", "api_calls", quantity,
                     "2026-10-03T10:00:00Z")
        billcycle(db, "ingest", "-", stdin=jsonl(line))
    # A file saved with a byte order mark (as editors on Windows do) is read as it is meant.
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + jsonl(usage(
        "u-marked", "cus_ct_hybrid", "api_calls", "1", "2026-10-03T10:00:00Z")).replace(
        b"\n", b"\r\n"))
    assert billcycle_json(db, "ingest", str(marked))["accepted"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "book.jsonl").write_bytes(b"also not json\n")
    billcycle_json(db, "ingest", str(other / "book.jsonl"))
    kept = billcycle_json(db, "deadletters")
    assert len(kept) == 5 and kept[:2] == letters
    assert sorted(d["message_id"] or d["raw"] for d in kept[2:]) == [
        "also not json", "u-stdin-3", "u-stdin-7"]

    # October: the in-advance subscription only.
    october = billcycle_json(db, "run", "--cycle-date", "2026-10-01", "--batch-id", "oct")
    assert october["counts"] == {"contracts": 3, "invoiced": 1, "held": 0, "failed": 0,
                                 "not_due": 2}

    # A dry run reports exactly what the real run then issues, and writes nothing.
    dry = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--dry-run")
    dry_text = billcycle(db, "run", "--cycle-date", "2026-11-01", "--dry-run").stdout
    assert "batch show" not in dry_text and "run it without --dry-run" in dry_text
    assert billcycle_json(db, "invoices") == billcycle_json(db, "invoices", "--batch", "oct")
    real = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert dry["invoices"] == real["invoices"]
    assert dry["counts"] == real["counts"] == {
        "contracts": 3, "invoiced": 1, "held": 1, "failed": 0, "not_due": 1}
    assert real["held"][0]["contract_id"] == "ct_storage"
    assert "storage_gb" in real["held"][0]["reason"]
    issued = billcycle_json(db, "invoices", "--batch", "nov")
    drafts = {d["invoice_id"]: {k: v for k, v in d.items() if k != "batch_id"}
              for d in dry["drafts"]}
    assert {i["invoice_id"]: {k: v for k, v in i.items() if k != "batch_id"}
            for i in issued} == drafts

    [hybrid] = issued
    assert hybrid["number"] == "INV-000002"
    assert hybrid["total"] == "1005.00"
    assert [(ln["kind"], ln["amount"]) for ln in hybrid["lines"]] == [
        ("subscription", "1000.00"), ("usage", "5.00")]
    assert hybrid["due_date"] == "2026-12-01"

    # The same cycle date again bills nothing new.
    again = billcycle_json(db, "run", "--cycle-date", "2026-11-01")
    assert again["invoices"] == [] and again["counts"]["invoiced"] == 0

    # The batch explains itself: every contract accounted for, with reasons.
    shown = billcycle_json(db, "batch", "show", "nov")
    assert shown["counts"]["contracts"] == 3
    outcomes = {c["contract_id"]: c for c in shown["contracts"]}
    assert outcomes["ct_later"]["next_due"] == "2026-12-01"
    assert "watermark" in outcomes["ct_storage"]["reason"]
    text = billcycle(db, "batch", "show", "nov").stdout
    assert "ct_storage" in text and "held" in text

    # The producer catches up; the retry bills the held contract in the same batch.
    late = tmp_path / "late.jsonl"
    late.write_bytes(jsonl(watermark("w-3", "storage_gb", "2026-11-01T00:00:00Z")))
    billcycle_json(db, "ingest", str(late))
    retried = billcycle_json(db, "retry", "nov")
    # The retry counts the contract it decided; the batch, all three.
    assert retried["counts"] == {"contracts": 1, "invoiced": 1, "held": 0, "failed": 0,
                                 "not_due": 0}
    assert retried["batch_counts"] == {"contracts": 3, "invoiced": 2, "held": 0, "failed": 0,
                                       "not_due": 1}
    storage = billcycle_json(db, "invoices", "--contract", "ct_storage")
    assert [(i["number"], i["total"], i["batch_id"]) for i in storage] == [
        ("INV-000003", "7.00", "nov")]
    numbers = [i["number"] for i in billcycle_json(db, "invoices")]
    assert numbers == [f"INV-{n:06d}" for n in range(1, len(numbers) + 1)]

    # Payments: up to what an invoice owes, nothing to say; beyond it, the customer's credit
    # is named, in the text and the JSON (and the same payment again is a duplicate).
    def payment(pid: str, amount: str) -> dict[str, str]:
        return {"type": "payment.received", "id": pid, "occurred_at": "2026-11-20T09:00:00Z",
                "invoice_number": "INV-000002", "amount": amount, "currency": "USD"}

    settled = billcycle_json(db, "ingest", "-", stdin=jsonl(payment("pay-1", "1000.00")))
    assert (settled["accepted"], settled["notes"]) == (1, [])
    over = billcycle(db, "ingest", "-", stdin=jsonl(payment("pay-2", "25.00"))).stdout
    assert ("note: payment pay-2 of 25.00 USD on INV-000002, which still owed 5.00 USD: 20.00 "
            "USD is held as the customer's credit") in over
    again = billcycle_json(db, "ingest", "-", stdin=jsonl(payment("pay-2", "25.00")))
    assert (again["duplicates"], again["notes"]) == (1, [])

    # A batch id is one batch's: reused for another cycle date, the run is refused in a line.
    reused = billcycle_process(db, "run", "--cycle-date", "2026-12-01", "--batch-id", "nov")
    assert reused.returncode == 1 and "Traceback" not in reused.stderr
    assert reused.stderr.strip() == ("billcycle: batch nov already exists for cycle date "
                                     "2026-11-01; choose another --batch-id for 2026-12-01")
    assert billcycle_json(db, "invoices") == billcycle_json(db, "invoices", "--batch", "oct") \
        + billcycle_json(db, "invoices", "--batch", "nov")


def test_errors_are_one_line_reasons_with_a_non_zero_exit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'b.db'}"
    # Only commands that bring input make a store: a mistyped path is not answered from an
    # empty store made there; nor is a store in memory, gone with the command.
    for url, said in ((db, f"no billcycle store at {tmp_path / 'b.db'} (no such file); check "
                           "--db"),
                      ("sqlite:///:memory:", "is in memory: it would be empty and gone")):
        unmade = billcycle_process(url, "invoices")
        assert unmade.returncode == 1 and unmade.stderr.count("\n") == 1
        assert said in unmade.stderr
    # Nor does an ingest whose input cannot be read (QA: it made the store, then failed).
    for unreadable in (tmp_path / "none.jsonl", tmp_path):
        unread = billcycle(db, "ingest", str(unreadable), check=False)
        assert unread.returncode == 1 and unread.stderr.count("\n") == 1
        assert unread.stderr.startswith(f"billcycle: cannot read {unreadable}: ")
        assert "; check the path" in unread.stderr
    assert not (tmp_path / "b.db").exists()
    billcycle(db, "ingest", "-", stdin=b"")
    missing = billcycle_process(db, "batch", "show", "nope")
    assert missing.returncode != 0 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "no batch nope" in missing.stderr
    unverified = billcycle_process(db, "batch", "verify", "nope")
    assert unverified.returncode != 0 and "`billcycle batch list` shows them" in unverified.stderr
    listed = billcycle_process(db, "--json", "invoices")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    # A batch or contract that does not exist is said, not listed as issuing nothing.
    for flag, said in (("--batch", "no batch nope; `billcycle batch list` shows them"),
                       ("--contract", "no contract nope; check the id")):
        unknown = billcycle(db, "invoices", flag, "nope", check=False)
        assert unknown.returncode == 1 and said in unknown.stderr, flag
    bad_db = billcycle("mysql://x", "invoices", check=False)
    assert bad_db.returncode != 0 and "unsupported store URL" in bad_db.stderr
    # Batch ids are quoted in suggested commands and Kafka messages: no spaces or slashes.
    spaced = billcycle_process(db, "run", "--cycle-date", "2026-12-01", "--batch-id", "a b/c")
    assert spaced.returncode == 2 and "'a b/c' is not a batch id" in spaced.stderr
    # Sizes and intervals are positive: a page of 0 read nothing and called the views rebuilt,
    # an interval of -1 spun a core for good, a chunk of 0 billed no contract.
    for args, said in (
        (("project", "--follow", "--interval", "-1"), "'-1' is not a number of seconds > 0"),
        (("replay", "--page-size", "0"), "'0' is not a whole number >= 1"),
        (("run", "--cycle-date", "20261201"), "'20261201' is not a date; use YYYY-MM-DD"),
        (("run", "--cycle-date", "2026-12-01", "--chunk-size", "-5"),
         "'-5' is not a whole number >= 1"),
        # Near year 1 or 9999 local midnights and periods overflowed: a traceback.
        (("report", "revenue", "--as-of", "9999-12-31"),
         "'9999-12-31' is outside the years 1900 to 2999; check the year"),
        (("usage", "assign", "--customer", "c", "--metric", "m", "--contract", "k", "--from",
          "0001-01-01T00:00:00+09:00", "--to", "2026-10-01", "--reason", "r"),
         "'0001-01-01T00:00:00+09:00' is outside the years 1900 to 2999"),
        # Kafka refuses an empty group; kafka-python's error was retried as an outage.
        (("consume", "--bootstrap", "127.0.0.1:9", "--group", ""),
         "'' is not a consumer group's name"),
    ):
        refused = billcycle_process(db, *args)
        assert refused.returncode == 2 and said in refused.stderr, args
        assert refused.stderr.count("\n") == 1, refused.stderr  # not the usage block too
    # An argument's reason names the option, the value and where the options are listed;
    # one the command does not have is named by that command (QA: `run --usage-topic`).
    for command, told in (
        (("run", "--cycle-date", "2026-13-01"),
         "billcycle run: --cycle-date '2026-13-01' is not a date; use YYYY-MM-DD "
         "(see billcycle run --help)\n"),
        (("run", "--cycle-date", "2026-12-01", "--usage-topic", "billing.usage"),
         "billcycle run: unrecognized arguments: --usage-topic billing.usage "
         "(see billcycle run --help)\n"),
        (("batch", "show"), "billcycle batch show: the following arguments are required: "
         "BATCH_ID (see billcycle batch show --help)\n"),
    ):
        argued = billcycle_process(db, *command)
        assert (argued.returncode, argued.stderr) == (2, told)
    helped = billcycle_process(db, "run", "--help")  # help keeps its usage block
    assert helped.returncode == 0 and helped.stdout.startswith("usage: billcycle run [-h]")
    # A store that cannot be opened is named, its password hidden, with what to check.
    nowhere = billcycle(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "ingest", "-",
                        stdin=b"", check=False)
    assert nowhere.returncode == 1 and nowhere.stderr.count("\n") == 1
    assert "cannot open the store" in nowhere.stderr
    assert "does its directory exist" in nowhere.stderr
    # Refused at once with the server's reason (QA: the pool retried for 30 s first).
    closed = billcycle("postgresql://billing:secret@127.0.0.1:1/books", "invoices", check=False)
    assert closed.returncode == 1 and closed.stderr.count("\n") == 1
    assert closed.stderr.startswith(
        "billcycle: cannot open the store postgresql://billing:***@127.0.0.1:1/books: ")
    assert "Connection refused" in closed.stderr and "secret" not in closed.stderr
    assert "is PostgreSQL running there" in closed.stderr
    assert "couldn't get a connection" not in closed.stderr  # the pool's, after 30 s
    no_port = billcycle("postgresql://billing@127.0.0.1:notaport/books", "invoices", check=False)
    assert no_port.returncode == 1 and "the port is not a number" in no_port.stderr
    # An illegal topic name is said at start-up (QA: a traceback at the first dead letter).
    bad_topic = billcycle(db, "consume", "--bootstrap", "127.0.0.1:1", "--deadletter-topic",
                          "bad topic!!", check=False)
    assert bad_topic.returncode == 1 and (
        "'bad topic!!' (the deadletter topic) is not a Kafka topic name") in bad_topic.stderr


def test_compressed_or_enciphered_event_state_is_refused_with_the_setting_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The library reads COMPRESSOR_TOPIC from the environment; the stores read usage records
    # from the stored JSON, so they refuse it rather than fail at the first fold.
    monkeypatch.setenv("COMPRESSOR_TOPIC", "zlib")
    refused = billcycle(f"sqlite:///{tmp_path / 'z.db'}", "ingest", "-", stdin=b"",
                        check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("billcycle: COMPRESSOR_TOPIC is set")
    assert "unset COMPRESSOR_TOPIC" in refused.stderr


def test_commands_at_once_on_a_new_embedded_store_all_open_it(tmp_path: Path) -> None:
    # Each opening makes or checks the schema in a transaction that reads, then writes: SQLite
    # refused the second process at once ("database is locked"), or two making a new store
    # collided on the tracking migration row (an IntegrityError traceback).
    db = f"sqlite:///{tmp_path / 'new.db'}"
    book = tmp_path / "book.jsonl"
    book.write_bytes(BOOK)
    script = f"{sys.prefix}/bin/billcycle"
    def at_once(*commands: list[str]) -> list[tuple[list[str], str]]:
        processes = [subprocess.Popen([script, "--db", db, *c], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for c in commands]
        return [(c, p.communicate(timeout=120)[1])
                for c, p in zip(commands, processes, strict=True) if p.wait() != 0]

    assert at_once(*[["ingest", str(book)]] * 3) == []  # three making the store
    assert at_once(["ingest", str(book)], *[["batch", "list"]] * 3, ["deadletters"],
                   ["invoices"]) == []
    assert billcycle_json(db, "ingest", str(book))["duplicates"] == 9  # all in, once


def test_ingest_lists_rejected_lines_in_input_order(tmp_path: Path) -> None:
    # Line 1 is refused when applied (no such contract), line 2 when parsed: each stage finds
    # its own, and the report puts them back in the file's order.
    book = tmp_path / "book.jsonl"
    amended = {"type": "contract.amended", "id": "m-a", "occurred_at": "2026-10-01T00:00:00Z",
               "contract_id": "ct_none", "effective_date": "2026-10-15",
               "components": [API]}
    book.write_bytes(jsonl(amended) + b"nonsense\n")
    ingested = billcycle_json("sqlite:///:memory:", "ingest", str(book))
    assert [r["position"] for r in ingested["rejected"]] == ["line 1", "line 2"]
    assert "nothing was kept" in ingested["notes"][-1]
    # And so are the dead letters kept (QA: `deadletters` listed them by stage).
    db = f"sqlite:///{tmp_path / 'kept.db'}"
    billcycle(db, "ingest", str(book))
    assert [d["at"] for d in billcycle_json(db, "deadletters")] == ["line 1", "line 2"]


def test_every_rejection_when_applied_names_its_message_type_and_id(tmp_path: Path) -> None:
    # Refused by a contract's or an invoice's rule, not by the message's shape: named as the
    # parse stage names them (QA: "contract ct_a has no milestone ..." named no message, and
    # payments read "payment pay-4: ..." beside "payment.received pay-5: ...").
    db = f"sqlite:///{tmp_path / 'b.db'}"
    billcycle(db, "ingest", "-", stdin=jsonl(contract("ct_a", PLATFORM)))
    billcycle(db, "run", "--cycle-date", "2026-10-01")  # INV-000001
    cash = {"occurred_at": "2026-10-05T09:00:00Z", "amount": "10.00", "currency": "USD"}
    ingested = billcycle_json(db, "ingest", "-", stdin=jsonl(
        {"type": "milestone.completed", "id": "ms-x", "occurred_at": "2026-10-15T00:00:00Z",
         "contract_id": "ct_a", "milestone": "nope", "completed_on": "2026-10-15"},
        {"type": "payment.received", "id": "pay-4", "invoice_number": "INV-000001",
         **cash, "currency": "EUR"},
        {"type": "payment.received", "id": "pay-5", "invoice_number": "INV-000009", **cash},
        {"type": "refund.paid", "id": "r-1", "invoice_number": "INV-000001", **cash}))
    assert [r["reason"] for r in ingested["rejected"]] == [
        "milestone.completed ms-x: contract ct_a has no milestone 'nope' (its milestones: "
        "none); check the milestone name",
        "payment.received pay-4: currency EUR does not match invoice INV-000001 in USD; send "
        "the payment in USD",
        "payment.received pay-5: no invoice INV-000009; check the invoice number",
        "refund.paid r-1: 10.00 USD is more than INV-000001 holds for cus_ct_a on 2026-10-05 "
        "(0.00 USD: what was paid beyond what it owed, less refunds dated by then); check the "
        "document number, the amount and the date"]
