"""Usage no contract bills is named by every run: usage that arrives before its customer's
contract (kept, and billed once the contract comes), usage of a metric no contract of its
customer prices, usage outside the service of the contracts pricing it, usage sent with a
contract_id naming no contract that prices it, and usage in periods that no contract bills it
for (between two contracts, or after terms amended away from its metric)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import pytest

from domain.application import BillingApplication
from infra.store.url import store_env
from projections.runner import Projections
from tests.e2e.cli import billcycle, billcycle_json, jsonl
from tests.e2e.test_cli_billing import API, PLATFORM, STORAGE, contract, usage


def ingest(db: str, tmp_path: Path, name: str, *messages: dict[str, object]) -> None:
    path = tmp_path / name
    path.write_bytes(jsonl(*messages))
    assert billcycle_json(db, "ingest", str(path))["rejected"] == []


def terminated(contract_id: str, end_date: str) -> dict[str, object]:
    return {"type": "contract.terminated", "id": f"m-end-{contract_id}",
            "occurred_at": "2026-10-10T00:00:00Z", "contract_id": contract_id,
            "end_date": end_date}


def amended_to(contract_id: str, effective: str, *components: dict[str, Any]) -> dict[str, object]:
    return {"type": "contract.amended", "id": f"m-amend-{contract_id}",
            "occurred_at": "2026-10-10T00:00:00Z", "contract_id": contract_id,
            "effective_date": effective, "components": list(components)}


def test_usage_before_its_contract_is_named_by_each_run_then_billed_once(
    db: str, tmp_path: Path
) -> None:
    # Usage of cus_ct_new arrives before its contract (topics arrive in any order).
    ingest(db, tmp_path, "october.jsonl",
           contract("ct_hybrid", PLATFORM),
           usage("u-1", "cus_ct_new", "api_calls", "2000", "2026-10-03T10:00:00Z"),
           usage("u-2", "cus_ct_new", "api_calls", "1500", "2026-10-20T08:30:00Z"))

    # The run bills what it can and names the usage no contract bills yet.
    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert run["counts"]["invoiced"] == 1
    [warning] = run["warnings"]
    assert warning.startswith("usage of 1 customer with no contract (2 events) is not billed "
                              "until a contract of theirs prices it: cus_ct_new (api_calls: 2 "
                              "since 2026-10-03)")
    assert billcycle_json(db, "report", "usage-without-contract") == [{
        "customer_id": "cus_ct_new", "metric": "api_calls", "events": 2, "quantity": "3500",
        "since": "2026-10-03T10:00:00+00:00", "latest_at": "2026-10-20T08:30:00+00:00"}]
    # ... and the batch keeps it, for whoever explains the run later.
    shown = billcycle_json(db, "batch", "show", "nov")
    assert shown["manifest"]["usage_without_contract"] == {"customers": 1, "events": 2}
    assert ("usage without a contract, not billed: 1 customer, 2 events"
            in billcycle(db, "batch", "show", "nov").stdout)

    # The contract arrives: the next run bills the usage, once, and nothing is left over.
    ingest(db, tmp_path, "contract.jsonl", contract("ct_new", API))
    later = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov-2")
    assert later["warnings"] == [] and later["counts"]["invoiced"] == 1
    [invoice] = billcycle_json(db, "invoices", "--contract", "ct_new")
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in invoice["lines"]] == [
        ("usage", "3500", "5.00")]  # 1,000 free, 2,500 at 0.002
    assert billcycle_json(db, "report", "usage-without-contract") == []
    assert "no usage without a contract" in billcycle(
        db, "report", "usage-without-contract").stdout


def test_usage_of_a_metric_no_contract_of_the_customer_prices_is_named(
    db: str, tmp_path: Path
) -> None:
    # cus_ct_a's contract prices api_calls; its storage_gb usage has no price anywhere, while
    # cus_ct_b's storage_gb usage is priced by its second contract.
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_a", PLATFORM, API),
           contract("ct_b", PLATFORM),
           {**contract("ct_b2", STORAGE), "customer_id": "cus_ct_b"},
           usage("u-1", "cus_ct_a", "api_calls", "10", "2026-10-03T10:00:00Z"),
           usage("u-2", "cus_ct_a", "storage_gb", "40", "2026-10-04T10:00:00Z"),
           usage("u-3", "cus_ct_a", "storage_gb", "50", "2026-10-05T10:00:00Z"),
           usage("u-4", "cus_ct_b", "storage_gb", "70", "2026-10-05T10:00:00Z"))

    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert run["counts"]["invoiced"] == 3
    assert run["warnings"] == [
        "usage of cus_ct_a that no contract of theirs prices is not billed: storage_gb "
        "(2 events); `billcycle batch show nov` names each contract"]
    outcomes = {o["contract_id"]: o for o in billcycle_json(db, "batch", "show", "nov")
                ["contracts"]}
    assert outcomes["ct_a"]["unpriced_usage"] == (
        "usage of cus_ct_a that no contract of theirs prices is not billed: storage_gb "
        "(2 events)")
    assert "unpriced_usage" not in outcomes["ct_b"] and "unpriced_usage" not in outcomes["ct_b2"]
    assert "storage_gb (2 events)" in billcycle(db, "batch", "show", "nov").stdout


def test_usage_outside_the_service_of_the_contracts_pricing_it_is_named(
    db: str, tmp_path: Path
) -> None:
    # ct_a starts on 2026-10-01 and is terminated from 2026-10-20: usage from before the start
    # and from the end date on lies in none of its periods.
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_a", API),
           terminated("ct_a", "2026-10-20"),
           usage("u-1", "cus_ct_a", "api_calls", "5000", "2026-09-29T10:00:00Z"),
           usage("u-2", "cus_ct_a", "api_calls", "3000", "2026-10-05T10:00:00Z"),
           usage("u-3", "cus_ct_a", "api_calls", "7000", "2026-10-25T10:05:00Z"))

    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    note = ("usage of cus_ct_a outside the service of the contracts pricing it is not billed: "
            "api_calls from 2026-09-29 10:00 UTC (1 event), before service starts on "
            "2026-10-01 (ct_a); api_calls until 2026-10-25 10:15 UTC (1 event), after service "
            "ended on 2026-10-20 (ct_a)")
    assert run["warnings"] == [f"{note}; `billcycle batch show nov` names each contract"]
    # Only the usage within the service is billed: 3,000, of which 1,000 free.
    [invoice] = billcycle_json(db, "invoices", "--contract", "ct_a")
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in invoice["lines"]] == [
        ("usage", "3000", "4.00")]
    [outcome] = billcycle_json(db, "batch", "show", "nov")["contracts"]
    assert outcome["usage_outside_service"] == note
    assert "after service ended on 2026-10-20" in billcycle(db, "batch", "show", "nov").stdout
    billcycle(db, "batch", "verify", "nov")  # the notes are the run's, not its outcomes'


def test_usage_sent_with_a_contract_id_naming_no_contract_that_prices_it_is_named(
    db: str, tmp_path: Path
) -> None:
    # cus_ct_a has ct_a (api_calls) and ct_b (storage_gb). Its producers tag api_calls usage
    # with ct_a (billed), with ct_b (which prices no api_calls) and with ct_old (no such
    # contract): only ct_a's own and the untagged usage are read.
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_a", PLATFORM, API),
           {**contract("ct_b", STORAGE), "customer_id": "cus_ct_a"},
           {**usage("u-1", "cus_ct_a", "api_calls", "3000", "2026-10-03T10:00:00Z"),
            "contract_id": "ct_a"},
           usage("u-2", "cus_ct_a", "api_calls", "11", "2026-10-06T10:00:00Z"),
           {**usage("u-3", "cus_ct_a", "api_calls", "7000", "2026-10-05T10:00:00Z"),
            "contract_id": "ct_b"},
           {**usage("u-4", "cus_ct_a", "api_calls", "5000", "2026-10-04T10:00:00Z"),
            "contract_id": "ct_old"},
           {**usage("u-5", "cus_ct_a", "api_calls", "5000", "2026-10-07T10:00:00Z"),
            "contract_id": "ct_old"})

    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    note = ("usage of cus_ct_a sent with a contract_id that names no contract pricing it is not "
            "billed: api_calls sent with contract_id ct_b (1 event; ct_b does not price "
            "api_calls); api_calls sent with contract_id ct_old (2 events; no contract ct_old "
            "of cus_ct_a)")
    assert run["warnings"] == [
        f"{note} (and 1 more); `billcycle batch show nov` names each contract"]
    invoices = {i["contract_id"]: i for i in billcycle_json(db, "invoices")}
    assert [(ln["kind"], ln["quantity"]) for ln in invoices["ct_a"]["lines"]
            if ln["kind"] == "usage"] == [("usage", "3011")]
    outcomes = {o["contract_id"]: o for o in billcycle_json(db, "batch", "show", "nov")
                ["contracts"]}
    assert outcomes["ct_a"]["misattributed_usage"] == note
    assert outcomes["ct_b"]["misattributed_usage"] == note
    assert "api_calls sent with contract_id ct_old" in billcycle(
        db, "batch", "show", "nov").stdout
    billcycle(db, "batch", "verify", "nov")


def test_usage_in_periods_whose_terms_no_longer_price_it_is_named(
    db: str, tmp_path: Path
) -> None:
    # ct_a prices api_calls until an amendment effective 2026-10-15 drops it. October's usage
    # is priced with the terms at the month's end (contract.md), so none of it is billed:
    # neither the 5th's, before the amendment, nor the 20th's, after it. The note spans the
    # buckets the usage reaches within those periods.
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_a", PLATFORM, API),
           amended_to("ct_a", "2026-10-15", PLATFORM),
           usage("u-1", "cus_ct_a", "api_calls", "3000", "2026-10-05T10:00:00Z"),
           usage("u-2", "cus_ct_a", "api_calls", "2000", "2026-10-20T10:00:00Z"))

    run = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    note = ("usage of cus_ct_a in periods that no contract of theirs bills it for is not "
            "billed: api_calls from 2026-10-05 10:00 to 2026-10-20 10:15 UTC (2 events; the "
            "terms of ct_a at the end of those periods do not price it)")
    assert run["warnings"] == [f"{note}; `billcycle batch show nov` names each contract"]
    [invoice] = billcycle_json(db, "invoices", "--contract", "ct_a")
    assert [ln["kind"] for ln in invoice["lines"] if "usage" in ln["kind"]] == []
    [outcome] = billcycle_json(db, "batch", "show", "nov")["contracts"]
    assert outcome["usage_in_unbilled_windows"] == note
    assert "do not price it" in billcycle(db, "batch", "show", "nov").stdout
    billcycle(db, "batch", "verify", "nov")
    # The audit view keeps the note with the outcome, for whoever reads the batch there.
    billcycle(db, "project", "--projection", "audit")
    app = BillingApplication(env=store_env(db))
    try:
        [(notes,)] = Projections(app, ["audit"]).view("audit").select(
            "SELECT usage_notes FROM audit_outcomes WHERE contract_id = 'ct_a'")
    finally:
        app.close()
    assert json.loads(notes) == {"usage_in_unbilled_windows": note}


def test_acknowledged_usage_is_left_out_of_the_notes_until_more_comes(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ct_a is terminated from 2026-10-20 and ct_b (amended away from api_calls on the 15th)
    # leaves October's api_calls unbilled: each run names both, until an operator
    # acknowledges them as not to be billed.
    ingest(db, tmp_path, "book.jsonl",
           contract("ct_a", API),
           terminated("ct_a", "2026-10-20"),
           contract("ct_b", PLATFORM, API),
           amended_to("ct_b", "2026-10-15", PLATFORM),
           usage("u-1", "cus_ct_a", "api_calls", "7000", "2026-10-25T10:05:00Z"),
           usage("u-2", "cus_ct_b", "api_calls", "3000", "2026-10-05T10:00:00Z"),
           usage("u-3", "cus_ct_b", "api_calls", "2000", "2026-10-20T10:00:00Z"))
    named = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov")
    assert len(named["warnings"]) == 2
    invoiced = billcycle_json(db, "invoices")

    given = billcycle_json(db, "usage", "acknowledge", "--customer", "cus_ct_a", "--metric",
                           "api_calls", "--through", "2026-10-31", "--reason",
                           "terminated; usage after the end written off", "--by", "finance")
    assert given["through"] == "2026-11-01T00:00:00+00:00" and given["by"] == "finance"
    said = billcycle(db, "usage", "acknowledge", "--customer", "cus_ct_b", "--metric",
                     "api_calls", "--through", "2026-10-20T10:07:00Z", "--reason",
                     "moved off the API plan")
    assert ("usage of cus_ct_b's api_calls before 2026-10-20 10:07 UTC is not to be billed"
            in said.stdout) and said.stderr == ""
    listed = billcycle_json(db, "usage", "acknowledged")
    assert [(a["customer_id"], a["through"]) for a in listed] == [
        ("cus_ct_a", "2026-11-01T00:00:00+00:00"), ("cus_ct_b", "2026-10-20T10:07:00+00:00")]

    # The next run names nothing but the bucket holding ct_b's instant (10:00 to 10:15: it
    # may hold usage from after it), records what was acknowledged, and bills the same.
    quiet = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov-2")
    assert quiet["warnings"] == [
        "usage of cus_ct_b in periods that no contract of theirs bills it for is not billed: "
        "api_calls from 2026-10-20 10:00 to 2026-10-20 10:15 UTC (1 event; the terms of ct_b "
        "at the end of those periods do not price it; usage before 2026-10-20 10:00 UTC "
        "acknowledged); `billcycle batch show nov-2` names each contract"]
    assert billcycle_json(db, "invoices") == invoiced
    manifest = billcycle_json(db, "batch", "show", "nov-2")["manifest"]
    assert [a["reason"] for a in manifest["acknowledged_usage"]] == [
        "terminated; usage after the end written off", "moved off the API plan"]
    assert "usage acknowledged as not to be billed" in billcycle(
        db, "batch", "show", "nov-2").stdout

    # Usage after an acknowledged instant is named again: only it.
    ingest(db, tmp_path, "more.jsonl",
           usage("u-4", "cus_ct_a", "api_calls", "10", "2026-11-02T09:00:00Z"))
    again = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov-3")
    assert any(w.startswith("usage of cus_ct_a outside the service of the contracts pricing it "
                            "is not billed: api_calls until 2026-11-02 09:15 UTC (1 event; "
                            "usage before 2026-11-01 00:00 UTC acknowledged), after service "
                            "ended on 2026-10-20 (ct_a)")
               for w in again["warnings"])
    # Without --by, the OS user; where the OS knows none, "unknown".
    monkeypatch.setattr(getpass, "getuser", lambda: (_ for _ in ()).throw(KeyError("uid 1000")))
    nobody = billcycle(db, "--json", "usage", "acknowledge", "--customer", "cus_ct_c",
                       "--metric", "api_calls", "--through", "2026-10-31", "--reason",
                       "test account")
    assert json.loads(nobody.stdout)["by"] == "unknown"
    # A customer the store has not seen may be a typo, or usage still to come: recorded, and
    # said (QA: a mistyped id was recorded silently and the real usage kept being named).
    assert nobody.stderr == (
        "billcycle: warning: no contract or usage of customer cus_ct_c in this store yet, so "
        "the acknowledgement matches nothing now; check the id (a mistyped one is taken back "
        "with `billcycle usage unacknowledge`)\n")
    refused = billcycle(db, "usage", "acknowledge", "--customer", "cus_ct_a", "--metric",
                        "api_calls", "--through", "2026-11-30", "--reason", " ", check=False)
    assert refused.returncode == 1 and "give the reason" in refused.stderr
    # A later acknowledgement replaces the one in force, narrower or wider: said, as is an
    # instant still to come.
    narrowed = billcycle(db, "usage", "acknowledge", "--customer", "cus_ct_a", "--metric",
                         "api_calls", "--through", "2026-10-25", "--reason", "partly").stdout
    assert ("it replaces the one before 2026-11-01 00:00 UTC (terminated; usage after the end "
            "written off; by finance)") in narrowed and "future" not in narrowed
    ahead = billcycle(db, "usage", "acknowledge", "--customer", "cus_ct_a", "--metric",
                      "api_calls", "--through", "2999-01-01", "--reason", "all of it").stdout
    assert "its instant is in the future" in ahead

    # Given by mistake: taken back, the next run names all of that usage again.
    taken = billcycle_json(db, "usage", "unacknowledge", "--customer", "cus_ct_b", "--metric",
                           "api_calls", "--reason", "ct_b's usage is billable after all",
                           "--by", "finance")
    assert (taken["customer_id"], taken["reason"]) == ("cus_ct_b", "moved off the API plan")
    assert [a["customer_id"] for a in billcycle_json(db, "usage", "acknowledged")] == [
        "cus_ct_a", "cus_ct_c"]
    named_again = billcycle_json(db, "run", "--cycle-date", "2026-11-01", "--batch-id", "nov-4")
    assert ("usage of cus_ct_b in periods that no contract of theirs bills it for is not "
            "billed: api_calls from 2026-10-05 10:00 to 2026-10-20 10:15 UTC (2 events;"
            ) in " ".join(named_again["warnings"])
    again = billcycle(db, "usage", "unacknowledge", "--customer", "cus_ct_b", "--metric",
                      "api_calls", "--reason", "twice", check=False)
    assert again.returncode == 1 and (
        "no acknowledgement of cus_ct_b's api_calls is in force (the customer's: none)"
        ) in again.stderr
