"""Plain JSON-able views of invoices and batches, shared by the CLI's text and --json output."""

from __future__ import annotations

from typing import Any

from domain.billing_run import BillingRun
from domain.invoice import Invoice
from domain.money import format_money


def invoice_view(invoice: Invoice) -> dict[str, Any]:
    """The `invoices --json` shape of contract.md section 3 (plus subtotals, what was paid and
    refunded, and the balance)."""
    cur = invoice.currency
    return {
        "invoice_id": str(invoice.id),
        "number": invoice.number,
        "document_type": invoice.document_type,
        "batch_id": invoice.batch_id,
        "contract_id": invoice.contract_id,
        "customer_id": invoice.customer_id,
        "currency": cur,
        "issue_date": invoice.issue_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        "total": format_money(invoice.total, cur),
        "subtotals": {k: format_money(v, cur) for k, v in invoice.subtotals.items()},
        "paid": format_money(invoice.paid, cur),
        "refunded": format_money(invoice.refunded, cur),
        "balance": format_money(invoice.balance, cur),  # total - paid + refunded
        "lines": [
            {
                "component_id": line["component_id"],
                "kind": line["kind"],
                "description": line["description"],
                "quantity": line["quantity"],
                "unit_amount": line.get("unit_amount"),
                "amount": line["amount"],
                "period_start": line["period_start"],
                "period_end": line["period_end"],
            }
            for line in invoice.lines
        ],
    }


def batch_view(run: BillingRun) -> dict[str, Any]:
    """`batch show --json`: the manifest, every attempt, counts and each contract's outcome."""
    return {
        "batch_id": run.batch_id,
        "cycle_date": run.cycle_date.isoformat(),
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "status": "finished" if run.finished_at else "incomplete (interrupted or running)",
        "manifest": run.manifest,
        "attempts": run.attempts,
        "counts": run.counts(),
        "contracts": [o.to_record() for _, o in sorted(run.outcomes.items())],
    }
