"""One progress interface: a live bar on a terminal, plain ETA log lines elsewhere (Kaggle)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Counts finished items of a run and tells the ETA.

    On a TTY the line is redrawn in place; otherwise every finished item is one log line,
    which is what Kaggle's log viewer shows.
    """

    def __init__(self, total: int, label: str = "volumes", stream: TextIO | None = None,
                 live: bool | None = None, clock=time.monotonic):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.start = clock()
        self.done = 0

    def eta(self) -> float:
        if self.done == 0:
            return float("nan")
        elapsed = self.clock() - self.start
        return elapsed / self.done * (self.total - self.done)

    def advance(self, what: str, seconds: float) -> None:
        self.done += 1
        eta = format_seconds(self.eta()) if self.done < self.total else "0s"
        text = (f"[{self.done}/{self.total} {self.label}] {what} in {format_seconds(seconds)}, "
                f"elapsed {format_seconds(self.clock() - self.start)}, ETA {eta}")
        if self.live:
            width = 24
            filled = int(width * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if self.done >= self.total else ""
            self.stream.write(f"\r|{bar}| {text}\033[K{end}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def skip(self, count: int, text: str) -> None:
        """Count ``count`` items as done without timing them (e.g. resumed volumes)."""
        self.done += count
        self.note(text)

    def note(self, text: str) -> None:
        """A message that must not be overwritten by the live bar."""
        prefix = "\n" if self.live and 0 < self.done < self.total else ""
        self.stream.write(prefix + text + "\n")
        self.stream.flush()
