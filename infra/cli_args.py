"""The command line's parser and the argument types its subcommands share: dates, and sizes and
intervals that must be positive.

An ArgumentTypeError becomes `billcycle X: --flag 'VALUE' is not ...`, exit 2: a page size of 0
read nothing and called the views rebuilt, and an interval of -1 spun a core.
"""

from __future__ import annotations

import argparse
import re
from datetime import date
from typing import NoReturn

from consumers.messages.fields import FIRST_DAY, LAST_DAY

DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# argparse's "argument --flag: 'VALUE' is not ...", read as "--flag 'VALUE' is not ...".
ABOUT_A_VALUE = re.compile(r"argument (\S+): (?=')")


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line on stderr, exit 2 (contract.md: a failing
    command prints a one-line reason), not the usage block then the reason; --help is as is."""

    def error(self, message: str) -> NoReturn:
        reason = ABOUT_A_VALUE.sub(r"\1 ", message.replace("\n", " "), count=1)
        self.exit(2, f"{self.prog}: {reason} (see {self.prog} --help)\n")



# The batch id a command is about, as `run` says it on stderr and `billcycle batch list` shows.
BATCH_ID_HELP = "the batch's id, as run said it on stderr (billcycle batch list shows them)"


def parse_date(value: str) -> date:
    """YYYY-MM-DD only: fromisoformat alone also reads 20261201 and 2026-W48-1."""
    try:
        if DATE.fullmatch(value):
            return in_calendar(date.fromisoformat(value), value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD")


def in_calendar(day: date, value: str) -> date:
    """The day, if within the years contracts live in (the messages' own bound): beyond them a
    date is a typo, and computing periods or local midnights near year 1 or 9999 overflows."""
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(
            f"{value!r} is outside the years {FIRST_DAY.year} to {LAST_DAY.year}; check the year")
    return day


def positive_int(text: str) -> int:
    """A whole number >= 1 (a size: chunk, page, batch)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def group_name(text: str) -> str:
    """A Kafka consumer group's name: Kafka refuses an empty one, and kafka-python's error
    for it (InvalidGroupIdError) reads like an outage, retried for ever."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a consumer group's name: give one (--group NAME or "
            "BILLCYCLE_CONSUMER_GROUP), or leave both out for the default")
    return text


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (an interval, a wait)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value
