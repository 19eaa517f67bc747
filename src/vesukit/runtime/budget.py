"""The time budget: every volume gets a prediction before the deadline.

Costs are measured, not guessed: after each volume the planner knows each teacher's seconds
per voxel per TTA view. Before each volume it projects the time the remaining volumes need
with the current settings and, when that overshoots what is left, degrades in a fixed order:
first fewer TTA views (full -> flip -> none), then the lowest-weight teachers, one at a time
(the last teacher is never dropped). Every decision is returned as a sentence for the run
record and the log. When even the cheapest settings cannot make it, the run goes on with them
and the volumes still open at the deadline get fallback masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Kaggle gives 9 h; keep 30 min for start-up, installing wheels, zipping and validating.
DEFAULT_TIME_BUDGET = 9 * 3600 - 30 * 60
TTA_ORDER = ("full", "flip", "none")   # most to least expensive
SAFETY = 1.10                          # plan for 10 % more than measured


@dataclass
class Plan:
    """What the next volume runs with."""

    tta: str
    teachers: list[str]                # names, in manifest order
    dropped: list[str] = field(default_factory=list)


class TimeBudget:
    """Deadline bookkeeping and the degrade-when-behind planner.

    ``weights``: teacher name -> ensemble weight (decides who is dropped first).
    ``views``: (teacher name, tta level) -> number of TTA views that teacher runs at that level.
    """

    def __init__(self, seconds: float, weights: dict[str, float],
                 views: Callable[[str, str], int], tta: str,
                 clock: Callable[[], float] = time.monotonic,
                 reserve_per_volume: float = 2.0):
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()
        self.deadline = self.start + self.seconds
        self.weights = dict(weights)
        self.views = views
        self.reserve_per_volume = reserve_per_volume
        self.plan = Plan(tta=tta, teachers=list(weights))
        self.rates: dict[str, float] = {}   # teacher -> seconds per voxel per view

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def observe(self, teacher_seconds: dict[str, float], voxels: int, tta: str) -> None:
        """Learn each teacher's cost from one finished volume."""
        for name, seconds in teacher_seconds.items():
            views = max(self.views(name, tta), 1)
            self.rates[name] = seconds / max(voxels, 1) / views

    def projected(self, voxels_left: int, plan: Plan | None = None) -> float:
        plan = plan or self.plan
        per_voxel = sum(self.rates.get(name, 0.0) * self.views(name, plan.tta)
                        for name in plan.teachers)
        return per_voxel * voxels_left * SAFETY

    def replan(self, voxels_left: int, volumes_left: int) -> list[str]:
        """Degrade the plan until the remaining volumes fit; return the decisions taken."""
        decisions: list[str] = []
        if not self.rates:
            return decisions  # nothing measured yet: the first volume runs as asked
        available = self.remaining() - self.reserve_per_volume * volumes_left
        while self.projected(voxels_left) > available:
            need = self.projected(voxels_left)
            cheaper = self._cheaper_plan()
            if cheaper is None:
                decisions.append(
                    f"behind budget with the cheapest settings (need ~{need:.0f}s for "
                    f"{volumes_left} volume(s), {max(available, 0):.0f}s left): volumes still "
                    "open at the deadline get fallback masks")
                break
            decisions.append(self._describe(cheaper, need, available, volumes_left))
            self.plan = cheaper
        return decisions

    def _cheaper_plan(self) -> Plan | None:
        order = list(TTA_ORDER)
        if self.plan.tta in order and order.index(self.plan.tta) < len(order) - 1:
            return Plan(order[order.index(self.plan.tta) + 1], list(self.plan.teachers),
                        list(self.plan.dropped))
        if len(self.plan.teachers) > 1:
            lowest = min(self.plan.teachers, key=lambda n: (self.weights[n], n))
            return Plan(self.plan.tta, [n for n in self.plan.teachers if n != lowest],
                        self.plan.dropped + [lowest])
        return None

    def _describe(self, cheaper: Plan, need: float, available: float, volumes: int) -> str:
        why = (f"projected {need:.0f}s for {volumes} volume(s) > {max(available, 0):.0f}s "
               "left")
        if cheaper.tta != self.plan.tta:
            return f"{why}: TTA {self.plan.tta} -> {cheaper.tta}"
        dropped = cheaper.dropped[-1]
        return f"{why}: dropping teacher '{dropped}' (weight {self.weights[dropped]:g})"
