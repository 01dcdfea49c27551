"""A batch's record of what it did for each contract (domain/billing_run.py): the latest
outcome per contract, except that nothing due never replaces an invoice the batch issued."""

from __future__ import annotations

from datetime import UTC, date, datetime

from domain.billing_run import BillingRun, ContractOutcome, Outcome


def batch() -> BillingRun:
    return BillingRun("Y", date(2026, 11, 1), datetime(2026, 11, 1, tzinfo=UTC), {})


def test_nothing_due_found_by_a_second_process_does_not_hide_the_invoice_of_the_first() -> None:
    # QA (helper-25, F5): two processes on one batch id; the second found the contract billed
    # by the first, and its "nothing due" replaced "invoiced": batch show undercounted.
    run = batch()
    run.record_outcomes([ContractOutcome("ct_1", Outcome.INVOICED, number="INV-000001"),
                         ContractOutcome("ct_2", Outcome.HELD, reason="usage incomplete")],
                        attempt=0)
    run.record_outcomes([ContractOutcome("ct_1", Outcome.NOT_DUE, reason="nothing due"),
                         ContractOutcome("ct_2", Outcome.INVOICED, number="INV-000002")],
                        attempt=0)
    assert {cid: o.outcome for cid, o in run.outcomes.items()} == {
        "ct_1": Outcome.INVOICED, "ct_2": Outcome.INVOICED}
    replayed = None
    for event in run.collect_events():  # the same when the batch is read back from the log
        replayed = event.mutate(replayed)
    assert replayed is not None and replayed.outcomes == run.outcomes
