"""Kafka commands: `consume` (inbound topics) and `publish` (invoice events out)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.cli import Subcommands


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
