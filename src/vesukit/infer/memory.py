"""How many windows go through the model at once, and what to do when memory runs out.

- :func:`batch_size_from_free_memory`: the window batch that fits the device's free memory,
  given the bytes one window costs (measured with :func:`measure_item_bytes` on CUDA).
- :class:`OomPolicy`: the retry ladder on CUDA out-of-memory: halve the batch down to 1, then
  move the accumulators to the CPU (frees two float32 volumes on the GPU), then give up with a
  :class:`InferenceMemoryError` naming what to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vesukit.errors import VesukitError

#: Window batch used where free memory cannot be queried (CPU): larger batches do not make
#: a CPU faster but cost memory.
CPU_BATCH_SIZE = 2
#: Share of free GPU memory left unused by the batch estimate (allocator fragmentation,
#: cuDNN workspaces).
RESERVE_FRACTION = 0.25
MAX_BATCH_SIZE = 64


class InferenceMemoryError(VesukitError):
    """Even one window per batch, with accumulation on the CPU, does not fit in memory."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA (or other accelerator) out-of-memory errors."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_device_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``, or None where that cannot be asked (CPU)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        # Blocks PyTorch's caching allocator holds but does not use are free to us too.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    return None


def batch_size_from_free_memory(
    device: torch.device | str,
    item_bytes: int,
    *,
    reserve_fraction: float = RESERVE_FRACTION,
    max_batch: int = MAX_BATCH_SIZE,
    free_bytes: int | None = None,
) -> int:
    """Largest window batch whose working memory (``item_bytes`` each) fits the free memory.

    ``free_bytes`` overrides the query (tests); on a device without a query the CPU default
    is returned.
    """
    device = torch.device(device)
    if free_bytes is None:
        free_bytes = free_device_memory(device)
    if free_bytes is None:
        return min(CPU_BATCH_SIZE, max_batch)
    usable = free_bytes * (1.0 - reserve_fraction)
    return int(max(1, min(max_batch, usable // max(1, item_bytes))))


def measure_item_bytes(run_one: Callable[[], object], device: torch.device) -> int | None:
    """Peak extra CUDA memory of ``run_one()`` (one window through the model), or None off CUDA."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run_one()
    torch.cuda.synchronize(device)
    return max(1, torch.cuda.max_memory_allocated(device) - base)


@dataclass
class OomPolicy:
    """The state of the out-of-memory retry ladder for one sliding-window run."""

    batch_size: int
    accumulate_on_cpu: bool = False
    #: True where the accumulators live on an accelerator and could still move to the CPU.
    can_move_accumulators: bool = False
    retries: int = 0

    def on_out_of_memory(self, what: str) -> None:
        """Step down the ladder after an OOM, or raise when nothing is left to try."""
        self.retries += 1
        if self.batch_size > 1:
            self.batch_size = max(1, self.batch_size // 2)
            return
        if self.can_move_accumulators and not self.accumulate_on_cpu:
            self.accumulate_on_cpu = True
            return
        raise InferenceMemoryError(
            f"{what}: out of memory even with one window per batch and the accumulators on "
            "the CPU. Use a smaller patch, a smaller model, or a device with more memory."
        )


def release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
