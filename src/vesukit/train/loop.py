"""The training loop shared by `vesukit train` and `vesukit distill` (phases B and C).

Stages run in order, each with its own epochs and learning rate and a fresh AdamW over the
parameters it trains (``all``; then progressive unfreezing ``head`` -> ``decoder`` ->
``encoder``). After every epoch: the held-back volumes are predicted with the inference
engine `predict` uses and scored with the exact local metric; early stopping ends a stage
after ``patience`` evaluations without improvement, or after ``decline`` evaluations in a row
that each dropped (an unstable stage); the next stage starts from the best weights. A
checkpoint is written after every epoch; ``resume`` continues from it exactly (same seed,
same result as an uninterrupted run on the CPU).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vesukit.infer.settings import DEFAULT_OVERLAP
from vesukit.train import TrainError
from vesukit.train.checkpoint import STATE, load_training_state, restore_optimizer, save_training_state
from vesukit.train.monitor import Limits, Monitor
from vesukit.train.sampling import Augment, PatchSampler, TrainVolume
from vesukit.train.student import set_stage, trainable_parts

LOSS_TERMS = ("bce", "dice")
LOG_NAME = "train_log.jsonl"
PLOT_NAME = "train_log.png"


@dataclass(frozen=True)
class Stage:
    name: str       # all | head | decoder | encoder
    epochs: int
    lr: float

    def __post_init__(self) -> None:
        trainable_parts(self.name)  # validates the name
        if self.epochs < 1 or not self.lr > 0:
            raise TrainError(f"stage {self.name}: needs epochs >= 1 and lr > 0, got "
                             f"{self.epochs} and {self.lr}")


@dataclass(frozen=True)
class TrainConfig:
    stages: tuple[Stage, ...] = (Stage("all", 4, 2e-3),)
    steps_per_epoch: int = 40
    batch_size: int = 8
    loss_weights: dict = field(default_factory=lambda: {"bce": 1.0, "dice": 1.0})
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    surface_fraction: float = 0.5
    augment: Augment = Augment()
    seed: int = 0
    patience: int = 3
    decline: int = 2
    min_delta: float = 1e-4
    eval_threshold: float = 0.5
    # the held-back score runs the student as predict runs it by default (its overlap, its TTA)
    eval_overlap: float = DEFAULT_OVERLAP
    eval_tta: str = "none"
    amp: bool = True
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.stages:
            raise TrainError("no training stages")
        unknown = sorted(set(self.loss_weights) - set(LOSS_TERMS))
        if unknown:
            raise TrainError(f"loss terms {unknown}: choose from {', '.join(LOSS_TERMS)}")
        if self.steps_per_epoch < 1 or self.batch_size < 1:
            raise TrainError("steps_per_epoch and batch_size must be >= 1")

    def fingerprint(self) -> dict:
        """What a resumed run must share with the interrupted one."""
        data = asdict(self)
        data.pop("limits")
        return json.loads(json.dumps(data))


@dataclass
class HeldBack:
    """A labelled volume kept out of training, scored after every epoch."""

    volume_id: str
    image: np.ndarray
    label: np.ndarray
    prepared: Any  # vesukit.metric.PreparedLabel


@dataclass
class TrainResult:
    best_score: float | None
    best_epoch: int | None
    epochs_run: int
    history: list[dict]
    warnings: list[str]
    stopped: list[str]


class EarlyStopping:
    """Stop a stage after ``patience`` evaluations without an improvement of ``min_delta``,
    or when each of the last ``decline`` evaluations fell below the one before it."""

    def __init__(self, patience: int = 3, decline: int = 2, min_delta: float = 1e-4):
        self.patience, self.decline, self.min_delta = patience, decline, min_delta
        self.scores: list[float] = []
        self.best = -math.inf
        self.since_best = 0

    def update(self, score: float) -> tuple[bool, str | None]:
        """(improved, why to stop or None)."""
        self.scores.append(float(score))
        improved = score > self.best + self.min_delta
        if improved:
            self.best, self.since_best = float(score), 0
        else:
            self.since_best += 1
        if self.patience and self.since_best >= self.patience:
            return improved, f"no improvement in {self.since_best} evaluations"
        tail = self.scores[-(self.decline + 1):]
        if self.decline and len(tail) == self.decline + 1 and all(
                b < a for a, b in zip(tail, tail[1:])):
            return improved, f"the score fell in each of the last {self.decline} evaluations"
        return improved, None

    def state(self) -> dict:
        return {"scores": self.scores, "best": self.best, "since_best": self.since_best}

    def load(self, state: dict) -> None:
        self.scores = list(state["scores"])
        self.best = float(state["best"])
        self.since_best = int(state["since_best"])


def losses(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-term losses (voxel-weighted): BCE with logits and soft Dice."""
    total = weight.sum().clamp_min(1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    overlap = (weight * prob * target).sum()
    dice = 1.0 - (2.0 * overlap + 1.0) / ((weight * prob).sum() + (weight * target).sum() + 1.0)
    return {"bce": (weight * bce).sum() / total, "dice": dice}


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast("cuda", dtype=dtype), scaler


def evaluate(model, spec, held_back: Sequence[HeldBack], config: TrainConfig, device,
             monitor: Monitor, stage: str, step: int | None = None) -> dict:
    """Exact local score of each held-back volume, thresholded at ``eval_threshold``, the
    student run with predict's overlap and ``eval_tta``."""
    from vesukit.infer import predict_teacher

    scores, components, warned = {}, {}, []
    with torch.inference_mode():
        for item in held_back:
            prob = predict_teacher(item.image, model, spec, device=device,
                                   overlap=config.eval_overlap,
                                   tta=config.eval_tta).float().cpu().numpy()
            mask = (prob >= config.eval_threshold).astype(np.uint8)
            scores[item.volume_id] = item.prepared.score(mask).score
            message, values = monitor.components(mask, item.label, item.volume_id, stage, step)
            components[item.volume_id] = values
            if message:
                warned.append(message)
    return {"score": float(np.mean(list(scores.values()))), "scores": scores,
            "components": components, "warnings": warned}


def train_student(spec, volumes: Sequence[TrainVolume], out: str | Path, config: TrainConfig, *,
                  held_back: Sequence[HeldBack] = (), device: str | torch.device = "cpu",
                  resume: bool = False, initial_weights: str | Path | None = None,
                  progress: Callable[[str], None] | None = None,
                  on_epoch: Callable[[dict, torch.nn.Module], None] | None = None
                  ) -> tuple[TrainResult, torch.nn.Module]:
    """Train ``spec``'s network on patches of ``volumes``; checkpoints under ``out/checkpoint``,
    the log and its plot in ``out``. Returns the result and the model holding the best weights
    (the last ones when nothing is held back)."""
    from vesukit.runtime.progress import Progress
    from vesukit.teachers.registry import build_model

    out = Path(out)
    ckpt = out / "checkpoint"
    device = torch.device(device)
    if (ckpt / STATE).is_file() and not resume:
        raise TrainError(f"{ckpt}: a training checkpoint is already here; continue it with "
                         "--resume, or choose another --out")
    torch.manual_seed(config.seed)
    model = build_model(spec).to(device)
    if initial_weights is not None:
        from vesukit.teachers.checkpoint import load_weights, read_state_dict

        state_dict, report = read_state_dict(Path(initial_weights), spec=spec)
        load_weights(model, state_dict, report, strict=True, who=f"student ({initial_weights})")
    sampler = PatchSampler(list(volumes), spec, surface_fraction=config.surface_fraction,
                           augment=config.augment, seed=config.seed)
    monitor = Monitor(config.limits)
    stopper = EarlyStopping(config.patience, config.decline, config.min_delta)
    history: list[dict] = []
    stopped: list[str] = []
    start_stage, start_epoch, step = 0, 0, 0
    best_state: dict | None = None
    best_score, best_epoch, epochs_run = None, None, 0
    optimizer_tensors = optimizer_meta = None
    if resume and (ckpt / STATE).is_file():
        state, weights, best_state, optimizer_tensors = load_training_state(ckpt)
        if state.get("config") != config.fingerprint() or state.get("spec") != spec.to_json():
            raise TrainError(f"{ckpt}: the checkpoint was made with other settings or another "
                             "student; resume with the same options, or choose another --out")
        model.load_state_dict(weights)
        start_stage, start_epoch, step = state["stage"], state["next_epoch"], state["step"]
        history, stopped, epochs_run = state["history"], state["stopped"], state["epochs_run"]
        best_score, best_epoch = state["best_score"], state["best_epoch"]
        stopper.load(state["stopper"])
        monitor.warnings = list(state["warnings"])
        monitor._said = {tuple(k) for k in state["said"]}
        sampler.set_state(state["sampler"])
        torch.set_rng_state(optimizer_tensors.pop("rng.torch"))
        optimizer_meta = state["optimizer"]
        if progress and start_stage < len(config.stages):
            progress(f"resuming from {ckpt}: stage {config.stages[start_stage].name}, "
                     f"epoch {start_epoch + 1}, step {step}")
        elif progress:
            progress(f"{ckpt}: the run had finished; writing its result again")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    # the log is the checkpoint's history: a kill between writing a line and the checkpoint
    # would otherwise leave that epoch twice in it
    log_path.write_text("".join(json.dumps(record) + "\n" for record in history))
    total_epochs = sum(s.epochs for s in config.stages)
    bar = Progress(total_epochs, "epochs", live=False) if progress else None
    if bar and epochs_run:
        bar.skip(epochs_run, f"{epochs_run} epoch(s) done before the resume")
    autocast, scaler = _autocast(device, config.amp)

    for stage_index in range(start_stage, len(config.stages)):
        stage = config.stages[stage_index]
        trainable = set_stage(model, stage.name)
        optimizer = torch.optim.AdamW(trainable, lr=stage.lr, weight_decay=config.weight_decay)
        first_epoch = start_epoch if stage_index == start_stage else 0
        if first_epoch > 0 and optimizer_tensors is not None:
            # mid-stage resume: this stage's optimizer and early-stopping history continue
            restore_optimizer(optimizer, optimizer_tensors, optimizer_meta)
        else:
            stopper = EarlyStopping(config.patience, config.decline, config.min_delta)
        for epoch in range(first_epoch, stage.epochs):
            t0 = time.perf_counter()
            sums = dict.fromkeys((*LOSS_TERMS, "loss"), 0.0)
            norms = []
            for _ in range(config.steps_per_epoch):
                x, target, weight = (t.to(device) for t in sampler.batch(config.batch_size))
                with autocast:
                    out_map = model(x)
                logits = out_map[:, spec.channel:spec.channel + 1].float()
                terms = losses(logits, target, weight)
                loss = sum(config.loss_weights.get(k, 0.0) * v for k, v in terms.items())
                optimizer.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                params = [p for p in trainable if p.grad is not None]
                norm = float(torch.nn.utils.clip_grad_norm_(
                    params, config.grad_clip or math.inf)) if params else 0.0
                norms.append(norm)
                step += 1
                message = monitor.gradient(norm, step, stage.name)
                if message and progress:
                    progress(f"WARNING {message}")
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                elif math.isfinite(norm):
                    optimizer.step()
                monitor.magnitude(torch.sigmoid(logits.detach()), target, weight)
                for k, v in terms.items():
                    sums[k] += float(v.detach())
                sums["loss"] += float(loss.detach())
            epochs_run += 1
            record: dict[str, Any] = {
                "stage": stage.name, "epoch": epoch + 1, "step": step, "lr": stage.lr,
                "loss": {k: v / config.steps_per_epoch for k, v in sums.items()},
                "grad_norm": {"mean": float(np.mean(norms)), "min": float(np.min(norms)),
                              "max": float(np.max(norms))},
            }
            message, magnitudes = monitor.collapse(step, stage.name)
            record.update(magnitudes)
            if message and progress:
                progress(f"WARNING {message}")
            stop_reason = None
            if held_back:
                evaluation = evaluate(model, spec, held_back, config, device, monitor, stage.name,
                                      step)
                set_stage(model, stage.name)  # evaluation left the model in eval mode
                for message in evaluation.pop("warnings"):
                    if progress:
                        progress(f"WARNING {message}")
                record["eval"] = evaluation
                improved, stop_reason = stopper.update(evaluation["score"])
                if best_score is None or evaluation["score"] > best_score:
                    best_score, best_epoch = evaluation["score"], epochs_run
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            record["seconds"] = time.perf_counter() - t0
            record["warnings"] = list(monitor.warnings)
            history.append(record)
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            last_epoch = stop_reason is not None or epoch + 1 == stage.epochs
            next_stage = stage_index + 1 if last_epoch else stage_index
            if stop_reason:
                stopped.append(f"stage {stage.name} after epoch {epoch + 1}: {stop_reason}")
            if last_epoch and best_state is not None:
                model.load_state_dict(best_state)  # the next stage starts from the best
            state = {"config": config.fingerprint(), "spec": spec.to_json(), "stage": next_stage,
                     "next_epoch": 0 if last_epoch else epoch + 1, "step": step,
                     "epochs_run": epochs_run, "history": history, "stopped": stopped,
                     "best_score": best_score, "best_epoch": best_epoch,
                     "stopper": stopper.state(), "warnings": monitor.warnings,
                     "said": [list(k) for k in monitor._said], "sampler": sampler.state()}
            save_training_state(ckpt, model, optimizer, state, best_state)
            if bar:
                score = f", score {record['eval']['score']:.4f}" if "eval" in record else ""
                bar.advance(f"stage {stage.name} epoch {epoch + 1}/{stage.epochs}: loss "
                            f"{record['loss']['loss']:.4f} (bce {record['loss']['bce']:.4f}, "
                            f"dice {record['loss']['dice']:.4f}){score}",
                            record["seconds"])
            if on_epoch:
                on_epoch(record, model)
            if last_epoch:
                if stop_reason and bar:
                    bar.note(f"early stop: {stopped[-1]}")
                break
        optimizer_tensors = None
    if best_state is not None:
        model.load_state_dict(best_state)
    write_plot(history, out / PLOT_NAME)
    model.vesukit_trained = True  # type: ignore[attr-defined]
    return TrainResult(best_score=best_score, best_epoch=best_epoch, epochs_run=epochs_run,
                       history=history, warnings=list(monitor.warnings),
                       stopped=stopped), model


def write_plot(history: Sequence[dict], path: Path) -> Path | None:
    """Per-term losses and the held-back score per epoch as a PNG (matplotlib; skipped with
    ``None`` where it is not installed - the JSON log holds the same numbers)."""
    from vesukit._optional import optional_import

    if optional_import("matplotlib") is None or not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for term in (*LOSS_TERMS, "loss"):
        left.plot(epochs, [h["loss"][term] for h in history], label=term)
    left.set_xlabel("epoch")
    left.set_title("training loss")
    left.legend()
    scored = [(e, h["eval"]["score"]) for e, h in zip(epochs, history) if "eval" in h]
    if scored:
        right.plot(*zip(*scored), marker="o")
    right.set_xlabel("epoch")
    right.set_title("held-back score (exact metric)")
    for e, h in zip(epochs, history):
        if h is not history[0] and h["stage"] != history[int(e) - 2]["stage"]:
            for axis in (left, right):
                axis.axvline(e - 0.5, color="grey", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
