"""The exceptions vesukit raises for problems a user can fix.

Library code raises these; only the command line and the notebook print them. Every message
names the file (or teacher, or id), says what was found, and says what to do about it.
"""


class VesukitError(Exception):
    """A problem with the user's input or environment, with a message meant for a person.

    ``exit_code`` follows the command-line contract: 1 for bad input or a failed check,
    2 for a usage error.
    """

    exit_code = 1


class UsageError(VesukitError):
    """The command was called wrongly (bad flag combination, impossible value)."""

    exit_code = 2


class VolumeError(VesukitError):
    """A volume TIFF is missing, unreadable, or not a uint8 (Z,Y,X) multipage volume."""


class CompetitionRootError(VesukitError):
    """The competition root cannot be found, or its test ids are inconsistent."""


class MissingDependencyError(VesukitError):
    """An optional package is needed for this operation and is not installed."""


# The command line's exit codes, as README.md's table states them (a test compares the two).
EXIT_CODES = (
    (0, "success"),
    (1, "bad input or a failed check; for `predict`: no valid zip could be written"),
    (2, "usage error (a bad flag or value)"),
    (3, "`predict` only: the zip is valid and holds every test id, but some volumes were "
        "degraded (an empty fallback mask, a dropped teacher, less TTA, a fixed threshold, no "
        "post-processing, a retry, a worker that died); the log and run.json say which and why"),
    (130, "interrupted outside `predict` (Ctrl-C); `predict` finishes its zip on SIGTERM/SIGINT "
          "and exits 3"),
)
