"""Progress: ETA log lines off a terminal, a redrawn bar on one."""

from __future__ import annotations

import io

from vesukit.runtime.progress import Progress, format_seconds


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_log_lines_with_eta():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(4, stream=stream, live=False, clock=clock)
    clock.now = 10.0
    progress.advance("v1", 10.0)
    clock.now = 20.0
    progress.advance("v2", 10.0)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/4 volumes] v1 in 10.0s, elapsed 10.0s, ETA 30.0s"
    assert lines[1] == "[2/4 volumes] v2 in 10.0s, elapsed 20.0s, ETA 20.0s"


def test_live_bar_redraws_in_place_and_notes_stay():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(2, stream=stream, live=True, clock=clock)
    progress.advance("v1", 1.0)
    progress.note("WARNING something")
    progress.advance("v2", 1.0)
    text = stream.getvalue()
    assert text.count("\r|") == 2 and "|############------------|" in text
    assert "\nWARNING something\n" in text and text.endswith("\n")


def test_format_seconds():
    assert format_seconds(5.25) == "5.2s"
    assert format_seconds(125) == "2m05s"
    assert format_seconds(3 * 3600 + 61) == "3h01m"
