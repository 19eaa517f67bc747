"""What commands print besides their results."""

from __future__ import annotations

import sys


def progress_line(text: str) -> None:
    """One indented progress line on stderr, so stdout carries only the command's results."""
    print(f"  {text}", file=sys.stderr, flush=True)
