"""The `demo` command: a sample book, a billing run and its report on the embedded store."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.cli import Subcommands


def register(sub: Subcommands) -> None:
    """Add this module's commands to the CLI."""
