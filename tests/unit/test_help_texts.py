"""Every option and argument of every command says in its --help what its value is (QA 15,
L6: a FILE, a BATCH_ID and --cycle-date had no word of help)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from infra import sample_book
from infra.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's, each with the command line that reaches it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _parsers(subparser, f"{name} {sub}")


def _unhelped(parser: argparse.ArgumentParser, name: str) -> list[str]:
    missing = []
    for command, each in _parsers(parser, name):
        for action in each._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{command} {choice.dest}" for choice in action._choices_actions
                            if not choice.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{command} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_argument_of_every_command_has_help() -> None:
    assert _unhelped(build_parser(), "billcycle") == []


def test_every_option_of_the_sample_book_has_help_stating_its_default() -> None:
    parser = sample_book.build_parser()
    assert _unhelped(parser, "sample_book") == []
    for action in parser._actions:
        if action.option_strings and action.default is not argparse.SUPPRESS:
            assert "default" in (action.help or ""), action.option_strings
