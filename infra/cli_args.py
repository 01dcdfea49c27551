"""Argument types the subcommands share: sizes and intervals that must be positive.

argparse turns an ArgumentTypeError into `billcycle X: error: argument --flag: ...`, exit 2: a
page size of 0 read nothing and called the views rebuilt, and an interval of -1 spun a core.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1 (a size: chunk, page, batch)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (an interval, a wait)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value
