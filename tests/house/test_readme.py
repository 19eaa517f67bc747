"""The README's command list is the CLI's: every command, subcommand and option is shown."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vesukit.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def commands(parser: argparse.ArgumentParser, prefix: str = "vesukit"):
    """(``vesukit cmd [sub]``, its long options) for every leaf command of the parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")
            return
    options = sorted(o for a in parser._actions for o in a.option_strings
                     if o.startswith("--") and o not in ("--help", "--version"))
    yield prefix, options


def command_block() -> str:
    text = README.read_text()
    match = re.search(r"## Commands\n(.*?)\n## ", text, re.S)
    assert match, "README has no '## Commands' section"
    return match.group(1)


def test_every_command_and_option_is_in_the_readme():
    block = command_block()
    missing = []
    for command, options in commands(build_parser()):
        if command not in block:
            missing.append(command)
            continue
        # The options are listed on the command's own lines (up to the next command).
        start = block.index(command)
        following = block.find("\nvesukit ", start + 1)
        lines = block[start: following if following != -1 else len(block)]
        missing += [f"{command} {option}" for option in options if option not in lines]
    assert missing == []
