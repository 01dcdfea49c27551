"""JSON Schemas of billcycle's messages, generated from their pydantic models.

Producers and consumers in other languages validate against consumers/schemas/<name>.json.
`python -m consumers.schemas` rewrites the files (`--check` only compares); a unit test keeps
the checked-in files equal to what the models generate. To publish a message's schema, add
one line to SCHEMAS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from consumers.messages import (
    ContractAmended,
    ContractCreated,
    ContractTerminated,
    Message,
    MilestoneCompleted,
    PaymentReceived,
    RefundPaid,
    Usage,
    UsageWatermark,
)
from consumers.outbound import (
    CollectionActionRecorded,
    CollectionEnded,
    CollectionPaymentNoted,
    CollectionRefundNoted,
    CollectionStarted,
    CreditNoteIssued,
    DeadLetter,
    InvoiceIssued,
    InvoiceMessage,
    PaymentApplied,
    RefundApplied,
)

SCHEMA_DIR = Path(__file__).with_name("schemas")

# File name (without .json) -> the model, or annotated type, it describes.
SCHEMAS: dict[str, Any] = {
    # inbound (contract.md §1)
    "inbound": Message,  # any inbound message, chosen by its "type"
    "contract.created": ContractCreated,
    "contract.amended": ContractAmended,
    "contract.terminated": ContractTerminated,
    "milestone.completed": MilestoneCompleted,
    "usage": Usage,
    "usage.watermark": UsageWatermark,
    "payment.received": PaymentReceived,
    "refund.paid": RefundPaid,
    # outbound (consumers/outbound.py): billing.invoices, then billing.deadletter
    "invoice-event": InvoiceMessage,  # any message on billing.invoices, chosen by its "type"
    "invoice.issued": InvoiceIssued,
    "credit_note.issued": CreditNoteIssued,
    "payment.applied": PaymentApplied,
    "refund.applied": RefundApplied,
    "collection.started": CollectionStarted,
    "collection.payment_noted": CollectionPaymentNoted,
    "collection.refund_noted": CollectionRefundNoted,
    "collection.action_recorded": CollectionActionRecorded,
    "collection.ended": CollectionEnded,
    "deadletter": DeadLetter,
}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the message registered as `name`."""
    generated = TypeAdapter(SCHEMAS[name]).json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **generated}


def schema_files() -> dict[str, str]:
    """File name -> text of every registered schema, as they are checked in."""
    return {
        f"{name}.json": json.dumps(schema(name), indent=2, ensure_ascii=False) + "\n"
        for name in SCHEMAS
    }


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files that are missing or differ from what the models generate."""
    return [
        name
        for name, text in schema_files().items()
        if not (directory / name).is_file() or (directory / name).read_text("utf-8") != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write the stale schema files into `directory`; their names."""
    directory.mkdir(parents=True, exist_ok=True)
    stale = stale_files(directory)
    files = schema_files()
    for name in stale:
        (directory / name).write_text(files[name], "utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.schemas", description="Regenerate the message JSON Schemas."
    )
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"{SCHEMA_DIR / name} is stale; run python -m consumers.schemas")
        return 1 if stale else 0
    for name in write():
        print(f"wrote {SCHEMA_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
