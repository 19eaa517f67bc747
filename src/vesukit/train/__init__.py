"""Training students (phases B and C): `vesukit train` from labels, `vesukit distill` from the
teachers' cached maps mixed with labels.

Functional core in the modules (targets, sampling, student, monitor, loop); the commands are
thin. Everything here imports torch, so only the commands that train import this package.
"""

from vesukit.errors import VesukitError


class TrainError(VesukitError):
    """Training cannot start or continue; the message says which file or setting and why."""


__all__ = ["TrainError"]
