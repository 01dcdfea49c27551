"""The inbound messages of contract.md §1, one model each, and their union `Message`.

Defaults and readings the contract leaves open are stated in the field descriptions, which the
generated JSON Schemas (consumers/schemas/) carry to producers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from consumers.messages.components import Components, to_components
from consumers.messages.fields import (
    Currency,
    Day,
    Days,
    MessagePart,
    Name,
    NonNegativeDecimal,
    PositiveDecimal,
    Timestamp,
    TimestampOrDate,
    TimeZoneName,
    rule_error,
)
from domain.money import minor_units
from domain.terms import BillingFrequency, Component, ContractTerms

_THRESHOLD = (
    "When the open period's usage amount priced to date reaches it, usage to date is billed "
    "at the next run; must be > 0."
)


class Envelope(MessagePart):
    """Fields every message carries."""

    type: str = Field(description="The message kind; each message model narrows it.")
    id: Name = Field(description="The producer's unique id: the idempotency key.")
    occurred_at: Timestamp = Field(
        description="RFC 3339 timestamp with offset, e.g. 2026-11-03T10:00:00Z; read as UTC."
    )


class ContractCreated(Envelope):
    """A new contract and its terms."""

    type: Literal["contract.created"]
    contract_id: Name
    customer_id: Name
    currency: Currency
    start_date: Day
    end_date: Day | None = Field(
        default=None,
        description="Service ends at the start of this date; null = open-ended. Equal to "
        "start_date means a contract with no service days.",
    )
    timezone: TimeZoneName = Field(
        default="UTC", description="IANA name; all periods and dates of the contract are in it."
    )
    billing_frequency: BillingFrequency
    billing_anchor_date: Day | None = Field(
        default=None, description="Period boundaries repeat from it; absent or null = start_date."
    )
    payment_terms_days: Days = Field(
        default=30, description="Invoices are due this many days after issue; default 30."
    )
    usage_threshold_amount: PositiveDecimal | None = Field(default=None, description=_THRESHOLD)
    components: Components

    @model_validator(mode="after")
    def _dates_in_order(self) -> ContractCreated:
        if self.end_date is not None and self.end_date < self.start_date:
            raise rule_error(
                "end_before_start",
                f"{self.end_date} is before start_date {self.start_date}; end_date must be on "
                "or after start_date",
                at=".end_date",
            )
        if self.billing_anchor_date is None:
            # Frozen model: the default depends on another field, so it is set once, here.
            object.__setattr__(self, "billing_anchor_date", self.start_date)
        return self

    def to_terms(self) -> ContractTerms:
        """The domain terms this message establishes; `extra` holds its unknown fields."""
        return ContractTerms(
            contract_id=self.contract_id,
            customer_id=self.customer_id,
            currency=self.currency,
            start_date=self.start_date,
            timezone=self.timezone,
            billing_frequency=self.billing_frequency,
            billing_anchor_date=self.billing_anchor_date or self.start_date,
            payment_terms_days=self.payment_terms_days,
            components=to_components(self.components),
            end_date=self.end_date,
            usage_threshold_amount=self.usage_threshold_amount,
            extra=dict(self.model_extra or {}),
        )


class ContractAmended(Envelope):
    """A new full component list from effective_date on.

    usage_threshold_amount and payment_terms_days change only when present; an explicit null
    usage_threshold_amount removes the threshold.
    """

    type: Literal["contract.amended"]
    contract_id: Name
    effective_date: Day
    components: Components
    usage_threshold_amount: PositiveDecimal | None = Field(
        default=None, description=_THRESHOLD + " Absent = unchanged; null = no threshold."
    )
    payment_terms_days: Days | None = Field(default=None, description="Absent = unchanged.")

    @property
    def sets_usage_threshold(self) -> bool:
        """Whether the message carries usage_threshold_amount (null included)."""
        return "usage_threshold_amount" in self.model_fields_set

    def to_components(self) -> tuple[Component, ...]:
        return to_components(self.components)


class ContractTerminated(Envelope):
    type: Literal["contract.terminated"]
    contract_id: Name
    end_date: Day = Field(description="Service ends at the start of this date.")


class MilestoneCompleted(Envelope):
    type: Literal["milestone.completed"]
    contract_id: Name
    milestone: Name
    completed_on: Day


class Usage(Envelope):
    type: Literal["usage"]
    customer_id: Name
    metric: Name
    quantity: NonNegativeDecimal
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="Default {}. A unique_count component counts the distinct string, integer "
        'and boolean values of one property, as text (7 and "7" are one value); a decimal, '
        "null, array or object there counts nobody, and the runs billing its period name it.",
    )
    contract_id: Name | None = Field(
        default=None,
        description="Needed only where the customer has two active contracts pricing the metric.",
    )


class UsageWatermark(Envelope):
    """All usage of `metric` before `complete_through` has been sent."""

    type: Literal["usage.watermark"]
    metric: Name
    complete_through: TimestampOrDate
    source: Name | None = None


class _CashMessage(Envelope):
    """Money received or paid back against a document, in whole minor units of its currency."""

    invoice_number: Name
    amount: PositiveDecimal
    currency: Currency

    @model_validator(mode="after")
    def _amount_in_minor_units(self) -> _CashMessage:
        # Money moved is whole minor units; more places would leave sub-cent balances.
        places = minor_units(self.currency)
        whole = self.amount.quantize(Decimal(1).scaleb(-places))
        if whole != self.amount:
            raise rule_error(
                "amount_precision",
                f"{self.amount} has more than {places} decimal places, the minor units of "
                f"{self.currency}; send the amount {self.MOVED}, e.g. {whole}",
                at=".amount",
            )
        return self

    MOVED: ClassVar[str] = "received"  # what the reason asks for: the amount received


class PaymentReceived(_CashMessage):
    type: Literal["payment.received"]


class RefundPaid(_CashMessage):
    """An extension of contract.md: money paid back to the customer, of what the document
    (`invoice_number`: an invoice or a credit note) holds for them by `occurred_at`: a credit
    note's amount, or what payments brought beyond what it owed, less the refunds dated by then."""

    type: Literal["refund.paid"]
    MOVED: ClassVar[str] = "paid back"


Message = Annotated[
    ContractCreated
    | ContractAmended
    | ContractTerminated
    | MilestoneCompleted
    | Usage
    | UsageWatermark
    | PaymentReceived
    | RefundPaid,
    Field(discriminator="type"),
]
