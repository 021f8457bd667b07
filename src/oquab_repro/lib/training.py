"""The supervised training loop of the thesis (App. B.6): SGD, lr divided by 10 on plateaus.

Shared by pretraining and transfer (Ch. 3) and the weakly supervised nets (Ch. 4). Every epoch
ends with a checkpoint holding the model, optimiser, scheduler, history and all random states
(global torch RNG for dropout/jitter, the loader's shuffling generator), so a run killed at any
point resumes and finishes with exactly the weights an uninterrupted run would have produced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.metrics import topk_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the thesis uses lr 0.01, factor 0.1 and three reductions."""

    lr: float
    momentum: float
    weight_decay: float
    lr_factor: float
    patience: int  # epochs without validation-loss improvement before the lr is divided
    max_reductions: int  # training stops at the plateau after this many reductions
    max_epochs: int
    batch_size: int
    num_workers: int
    seed: int
    plateau_on: str = "val"  # the loss whose plateaus divide the lr: "train" (the thesis, §3.3) or "val"


@dataclass(frozen=True)
class Objective:
    """What :func:`fit` minimises when it is not single-label cross-entropy (e.g. Ch. 4's multi-label
    soft-margin loss on max-pooled score maps).

    ``loss(outputs, targets)`` is the batch mean, ``errors(outputs, targets)`` one error in [0, 1]
    per item; ``augment(x, targets)`` transforms each training batch (Ch. 4 rescales it) and must
    draw from the global torch RNG, which checkpoints save, so resumed runs stay exact. Targets may
    be tensors or dicts of tensors.
    """

    loss: Callable[[Any, Any], torch.Tensor]
    errors: Callable[[Any, Any], torch.Tensor]
    augment: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]] | None = None


def _to(targets: Any, device: torch.device) -> Any:
    if isinstance(targets, dict):
        return {k: v.to(device) for k, v in targets.items()}
    return targets.to(device)


def set_threads(n: int) -> None:
    """Intra-op threads for a stage (0 keeps torch's default). Small convolutions on a shared CPU
    run faster on one thread than on two that spin-wait for each other."""
    if n:
        torch.set_num_threads(n)


def fingerprint(settings: Any, tensors: dict[str, torch.Tensor] | None = None) -> str:
    """A digest of what a run depends on (settings as JSON, optionally starting weights), stored in
    every checkpoint so a persistent checkpoint folder never resumes a run made with other inputs."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted((tensors or {}).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _loader(dataset: Dataset, cfg: TrainConfig, shuffle: bool, generator: torch.Generator | None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, objective: Objective | None = None) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 error of a classifier over a loader (or, with an
    ``objective``, its mean loss and error)."""
    model.eval()
    if objective is not None:
        total, wrong, n = 0.0, 0.0, 0
        for x, y in loader:
            x, y = x.to(device), _to(y, device)
            outputs = model(x)
            total += float(objective.loss(outputs, y)) * len(x)
            wrong += float(objective.errors(outputs, y).sum())
            n += len(x)
        return {"loss": total / n, "error": wrong / n}
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total, n, logits_all, targets_all = 0.0, 0, [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total += float(loss_fn(logits, y))
        n += len(y)
        logits_all.append(logits.cpu())
        targets_all.append(y.cpu())
    errors = topk_errors(torch.cat(logits_all), torch.cat(targets_all), ks=(1, 5))
    return {"loss": total / n, "top1_error": errors[1], "top5_error": errors[5]}


@torch.no_grad()
def precompute(prefix: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> TensorDataset:
    """Outputs of a frozen, deterministic prefix (eval mode, no jitter) on every item, computed once:
    training the rest on them is the same optimisation as training the whole net, far cheaper."""
    prefix.to(device).eval()
    feats, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size):
        feats.append(prefix(x.to(device)).cpu())
        labels.append(y)
    return TensorDataset(torch.cat(feats), torch.cat(labels))


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    checkpointer: Checkpointer | None,
    desc: str = "train",
    run_id: str = "",
    objective: Objective | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place with cross-entropy; return the per-epoch history (column ``step``).

    Only parameters with ``requires_grad`` are optimised (frozen layers stay as they are). The lr
    starts at ``cfg.lr`` and is multiplied by ``cfg.lr_factor`` when the validation loss has not
    improved for ``cfg.patience`` epochs; the plateau after ``cfg.max_reductions`` reductions
    (or ``cfg.max_epochs``) ends training.

    ``run_id`` (see :func:`fingerprint`) identifies the inputs: checkpoints written under another
    id are discarded instead of resumed. ``objective`` replaces cross-entropy (history columns
    ``train_error``/``val_error`` then replace the top-k errors).
    """
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the model has no trainable parameter (every layer is frozen)")
    optimiser = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="min", factor=cfg.lr_factor, patience=cfg.patience
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    reductions, start = 0, 0
    state = checkpointer.latest(map_location=device) if checkpointer else None
    if state is not None and state.get("run_id") != run_id:
        log.warning("%s: checkpoints in %s come from other settings or data; starting afresh", desc, checkpointer.folder)
        checkpointer.clear()
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        history, reductions, start = state["history"], state["reductions"], state["epoch"]
        if state.get("finished"):
            log.info("%s: already finished at epoch %d", desc, start)
            return pd.DataFrame(history)
    loss_fn = objective.loss if objective else nn.CrossEntropyLoss()
    augment = objective.augment if objective else None
    error_key = "error" if objective else "top1_error"
    val_loader = _loader(val_set, cfg, shuffle=False, generator=None)
    finished = False
    epochs = tqdm(range(start + 1, cfg.max_epochs + 1), desc=desc, unit="epoch", initial=start, total=cfg.max_epochs)
    for epoch in epochs:
        tic = time.perf_counter()
        model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        for x, y in tqdm(_loader(train_set, cfg, shuffle=True, generator=generator), desc=f"epoch {epoch}", leave=False, unit="batch"):
            x, y = x.to(device), _to(y, device)
            if augment is not None:
                x, y = augment(x, y)
            logits = model(x)
            loss = loss_fn(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            seen += len(x)
            loss_sum += float(loss.detach()) * len(x)
            if objective is None:
                correct += int((logits.argmax(1) == y).sum())
            else:
                correct += len(x) - float(objective.errors(logits.detach(), y).sum())
        val = evaluate(model, val_loader, device, objective)
        lr = optimiser.param_groups[0]["lr"]
        scheduler.step(loss_sum / seen if cfg.plateau_on == "train" else val["loss"])
        if optimiser.param_groups[0]["lr"] < lr:
            reductions += 1
            log.info("%s: %s loss plateaued, lr %.2g → %.2g (%d)", desc, cfg.plateau_on, lr, optimiser.param_groups[0]["lr"], reductions)
        finished = reductions > cfg.max_reductions or epoch == cfg.max_epochs
        history.append(
            {
                "step": epoch,
                "lr": lr,
                "train_loss": loss_sum / seen,
                f"train_{error_key}": 1.0 - correct / seen,
                **{f"val_{k}": v for k, v in val.items()},
                "seconds": time.perf_counter() - tic,
            }
        )
        epochs.set_postfix(val_loss=f"{val['loss']:.3f}", val_err=f"{val[error_key]:.3f}", lr=f"{lr:.0e}")
        if checkpointer is not None:
            checkpointer.save(
                epoch,
                {
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(generator),
                    "history": history,
                    "reductions": reductions,
                    "finished": finished,
                    "run_id": run_id,
                },
            )
        if finished:
            break
    return pd.DataFrame(history)
