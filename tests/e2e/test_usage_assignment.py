"""An operator unblocks invoices held by untagged usage two contracts price: `usage assign`
says whose it is, `retry` bills it, `batch verify` decides the same again."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cli import billcycle, billcycle_json
from tests.e2e.test_cli_billing import API, contract, usage
from tests.e2e.test_unbilled_usage import ingest


def test_untagged_usage_held_until_assigned_then_billed_by_its_contract(
    db: str, tmp_path: Path
) -> None:
    ny = {"customer_id": "cus_1", "timezone": "America/New_York"}
    ingest(db, tmp_path, "book.jsonl", contract("ct_a", API, **ny), contract("ct_b", API, **ny),
           usage("u-1", "cus_1", "api_calls", "5000", "2026-10-10T10:00:00Z"),
           {**usage("u-2", "cus_1", "api_calls", "3000", "2026-10-11T10:00:00Z"),
            "contract_id": "ct_b"})
    held = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert [h["contract_id"] for h in held["held"]] == ["ct_a", "ct_b"]
    assert "billcycle usage assign --customer cus_1" in held["held"][0]["reason"]

    said = billcycle(db, "usage", "assign", "--customer", "cus_1", "--metric", "api_calls",
                     "--contract", "ct_a", "--from", "2026-10-01", "--to", "2026-11-01",
                     "--reason", "sandbox project of ct_a", "--by", "ops").stdout
    # Dates are local midnights in the contract's timezone (New York: UTC-4 in October).
    assert ("untagged usage of cus_1's api_calls from 2026-10-01 04:00 to 2026-11-01 04:00 "
            "UTC is ct_a's") in said
    assert [(a["contract_id"], a["start"]) for a in billcycle_json(db, "usage", "assigned")] == [
        ("ct_a", "2026-10-01T04:00:00+00:00")]
    refused = billcycle(db, "usage", "assign", "--customer", "cus_1", "--metric", "api_calls",
                        "--contract", "ct_b", "--from", "2026-10-15", "--to", "2026-12-01",
                        "--reason", "r", check=False)
    assert refused.returncode == 1 and "already assigned to ct_a" in refused.stderr
    # A reversed window is said as it was given, not as the UTC instants of its dates.
    reversed_ = billcycle(db, "usage", "assign", "--customer", "cus_1", "--metric",
                          "api_calls", "--contract", "ct_a", "--from", "2026-11-01", "--to",
                          "2026-10-01T00:00:00Z", "--reason", "r", check=False)
    assert (reversed_.returncode, reversed_.stderr) == (1, (
        "billcycle: the window --from 2026-11-01 --to 2026-10-01T00:00:00+00:00 is empty or "
        "reversed (a date is local midnight of ct_a, in America/New_York); give a --from "
        "before the --to\n"))

    # Taken back before anything is billed, and given again.
    assign = ("usage", "assign", "--customer", "cus_1", "--metric", "api_calls", "--contract",
              "ct_a", "--from", "2026-10-01", "--to", "2026-11-01", "--reason",
              "sandbox project of ct_a", "--by", "ops")
    unassign = ("usage", "unassign", "--customer", "cus_1", "--metric", "api_calls", "--from",
                "2026-10-01")
    assert "is no longer ct_a's" in billcycle(db, *unassign).stdout
    billcycle(db, *assign)
    billcycle(db, "retry", "nov")
    totals = {i["contract_id"]: i["total"] for i in billcycle_json(db, "invoices")}
    assert totals == {"ct_a": "8.00", "ct_b": "4.00"}  # 4000 and 2000 above 1000 free, at 0.002
    retried = billcycle_json(db, "batch", "show", "nov")["attempts"][-1]["manifest"]
    assert [a["contract_id"] for a in retried["assigned_usage"]] == ["ct_a"]
    assert "all identical" in billcycle(db, "batch", "verify", "nov").stdout

    # Found wrong after billing: given to ct_b, the window is priced again by both at their
    # next run, credited where it was billed and billed where it belongs.
    to_b = (*assign[:7], "ct_b", *assign[8:12], "--reason", "ct_b's batch jobs, found later")
    moved = billcycle(db, *to_b).stdout
    assert ("ct_a and ct_b invoiced usage of it: each prices those periods again at its next "
            "run for a later cycle date (a retry of the batch that invoiced them does not)"
            ) in moved
    billcycle_json(db, "run", "--cycle-date", "2026-12-01", "--batch-id", "dec")
    december = {i["contract_id"]: i for i in billcycle_json(db, "invoices")
                if i["batch_id"] == "dec"}
    assert {cid: i["total"] for cid, i in december.items()} == {
        "ct_a": "-8.00", "ct_b": "10.00"}  # ct_b: 8000 above 1000 is 14.00
    explained = billcycle(db, "explain", december["ct_a"]["number"]).stdout
    assert ("priced again because the contract changed from 2026-10-01 after the period was "
            "invoiced (untagged api_calls usage from 2026-10-01 04:00 UTC assigned to ct_b "
            "(ct_b's batch jobs, found later))") in explained
    assert ("none of the usage sent without contract_id is this contract's (the only "
            "contract pricing it at that instant, or the one assigned it)") in explained
    explained_b = billcycle(db, "explain", december["ct_b"]["number"]).stdout
    assert "usage sent without contract_id" not in explained_b  # all of it is ct_b's
    assert "all identical" in billcycle(db, "batch", "verify", "dec").stdout
    taken = billcycle_json(db, *unassign)
    assert taken["contract_id"] == "ct_b" and taken["repriced"] == ["ct_a", "ct_b"]
    # A window no invoice has billed usage of names no contract as pricing it again.
    december_window = (*assign[:9], "2026-12-01", "--to", "2027-01-01", *assign[12:])
    assert billcycle_json(db, *december_window)["repriced"] == []



def test_a_period_shared_by_contracts_in_two_timezones_bills_each_its_windows(
    db: str, tmp_path: Path
) -> None:
    # Active users, counted per contract: ct_ta's October is Tokyo's, ct_tb's is UTC's. The
    # evening of 10-31 UTC is ct_tb's October and ct_ta's November; the operator gives each
    # contract its own hours, and each counts the users of its own windows only.
    users = {"id": "users", "kind": "usage", "metric": "active_users",
             "aggregation": "unique_count", "unique_property": "user",
             "pricing": {"model": "per_unit", "unit_amount": "3.00"}}
    seen = [("u-1", "alice", "2026-10-05T00:00:00Z"), ("u-2", "alice", "2026-10-31T20:00:00Z"),
            ("u-3", "bob", "2026-10-31T21:00:00Z")]
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_ta", users, customer_id="cus_1", timezone="Asia/Tokyo"),
           contract("ct_tb", users, customer_id="cus_1"),
           *({**usage(mid, "cus_1", "active_users", "1", at), "properties": {"user": who}}
             for mid, who, at in seen))
    held = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert [h["contract_id"] for h in held["held"]] == ["ct_ta", "ct_tb"]

    def assign(contract_id: str, start: str, end: str) -> None:
        billcycle(db, "usage", "assign", "--customer", "cus_1", "--metric", "active_users",
                  "--contract", contract_id, "--from", start, "--to", end,
                  "--reason", "by project", "--by", "ops")

    assign("ct_ta", "2026-10-01", "2026-11-01")
    assign("ct_tb", "2026-10-31T15:00:00Z", "2026-11-01")
    retried = billcycle_json(db, "retry", "nov")
    assert retried["held"] == []
    totals = {i["contract_id"]: i["total"] for i in billcycle_json(db, "invoices")}
    assert totals == {"ct_ta": "3.00", "ct_tb": "6.00"}  # alice; alice and bob
    [tb] = [i for i in billcycle_json(db, "invoices") if i["contract_id"] == "ct_tb"]
    assert ("of the usage sent without contract_id, only that of 2026-10-31 15:00 to "
            "2026-11-01 00:00 UTC is this contract's, the rest another's"
            ) in billcycle(db, "explain", tb["number"]).stdout
    # explain --usage lists what each counted: its own window's untagged usage only.
    counted = {i["contract_id"]: [e["message_id"] for line in billcycle_json(
        db, "explain", i["number"], "--usage")["lines"]
        for e in line["counted_usage"]["events"]]
        for i in billcycle_json(db, "invoices")}
    assert counted == {"ct_ta": ["u-1"], "ct_tb": ["u-2", "u-3"]}  # u-2: Tokyo's November
    [tb_usage] = billcycle_json(db, "explain", tb["number"], "--usage")["lines"]
    assert tb_usage["counted_usage"]["untagged_within"] == [
        ["2026-10-31T15:00:00Z", "2026-11-01T00:00:00Z"]]
    assert tb_usage["counted_usage"]["agrees"]
    assert "all identical" in billcycle(db, "batch", "verify", "nov").stdout

    # A date that is local midnight of two windows (Tokyo's and UTC's 12-01) names neither.
    assign("ct_ta", "2026-12-01", "2026-12-01T00:00:00Z")
    assign("ct_tb", "2026-12-01", "2026-12-02")
    unassign = ("usage", "unassign", "--customer", "cus_1", "--metric", "active_users",
                "--from", "2026-12-01")
    refused = billcycle(db, *unassign, check=False)
    assert refused.returncode == 1 and (
        "2 assignments of cus_1's untagged active_users start on 2026-12-01, each at its "
        "contract's local midnight: ct_ta's from 2026-11-30T15:00:00+00:00, ct_tb's from "
        "2026-12-01T00:00:00+00:00; say which with --contract") in refused.stderr
    taken = billcycle_json(db, *unassign, "--contract", "ct_tb")
    assert (taken["contract_id"], taken["start"]) == ("ct_tb", "2026-12-01T00:00:00+00:00")
    wrong = billcycle(db, *unassign, "--contract", "ct_tb", check=False)
    assert wrong.returncode == 1 and "no assignment of cus_1's untagged active_users given to "\
        "ct_tb starts at 2026-12-01T00:00:00+00:00" in wrong.stderr
