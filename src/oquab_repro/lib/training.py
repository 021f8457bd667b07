"""The supervised training loop of the thesis (App. B.6): SGD, lr divided by 10 on plateaus.

Shared by pretraining and transfer (Ch. 3) and the weakly supervised nets (Ch. 4). Every epoch
ends with a checkpoint holding the model, optimiser, scheduler, history and all random states
(global torch RNG for dropout/jitter, the loader's shuffling generator), so a run killed at any
point resumes and finishes with exactly the weights an uninterrupted run would have produced.

Under ``torchrun`` (a process group of several ranks, ``lib/distributed.py``) :func:`fit` trains
the same network with DistributedDataParallel: every global batch is the one the single-process
loader would draw, split among the ranks (:func:`rank_batches`), each rank's loss weighted by its
share so the averaged gradient is the global batch's; losses and errors are summed over the ranks,
so the plateau schedule sees the same numbers everywhere; rank 0 alone writes checkpoints, and a
resumed run reads them on rank 0 and broadcasts them. One process runs exactly the code it always
did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from oquab_repro.lib import distributed
from oquab_repro.lib.checkpoint import Checkpointer, code_digest
from oquab_repro.lib.metrics import topk_errors

log = logging.getLogger(__name__)


class OptimSettings(Protocol):
    """An ``optim`` section of params.yaml (``params.OptimParams``): SGD, its plateau schedule."""

    lr: float
    momentum: float
    weight_decay: float
    lr_factor: float
    patience: int
    max_reductions: int
    plateau_on: str


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
    plateau_on: str = "val"  # whose loss plateaus divide the lr: "train" (§3.3) or "val" (held out)
    max_steps: int | None = None  # caps.steps_per_epoch: SGD steps per epoch (None: the whole set)

    @classmethod
    def from_optim(
        cls,
        optim: OptimSettings,
        *,
        max_epochs: int,
        batch_size: int,
        num_workers: int,
        seed: int,
        max_steps: int | None = None,
    ) -> TrainConfig:
        """The one way stages build it: the schedule of an ``optim`` section, the stage's sizes."""
        schedule = (
            "lr",
            "momentum",
            "weight_decay",
            "lr_factor",
            "patience",
            "max_reductions",
            "plateau_on",
        )
        return cls(
            **{k: getattr(optim, k) for k in schedule},
            max_epochs=max_epochs,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            max_steps=max_steps,
        )


Batches = Iterable[tuple[Any, Any]]
"""(model outputs, targets) of every batch of a validation pass."""


def _no_augment(x: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
    return x, targets


@dataclass(frozen=True)
class Objective:
    """What :func:`fit` minimises and how it scores a model.

    ``loss(outputs, targets)`` is the batch mean SGD minimises, ``errors(outputs, targets)`` one
    error in [0, 1] per item (the training error, history column ``train_<error_name>``),
    ``summarise`` turns a validation pass into its ``loss`` and errors (columns ``val_*``), and
    ``augment(x, targets)`` transforms each training batch (Ch. 4 rescales it); it must draw from
    the global torch RNG, which checkpoints save, so resumed runs stay exact. Targets may be
    tensors or dicts of tensors. :data:`CROSS_ENTROPY` is the default.
    """

    loss: Callable[[Any, Any], torch.Tensor]
    errors: Callable[[Any, Any], torch.Tensor]
    error_name: str
    summarise: Callable[[Batches], dict[str, float]]
    augment: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]] = _no_augment

    @classmethod
    def per_item(
        cls,
        loss: Callable[[Any, Any], torch.Tensor],
        errors: Callable[[Any, Any], torch.Tensor],
        augment: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]] = _no_augment,
    ) -> Objective:
        """An objective validated by its loss and its error averaged over the items (Ch. 4)."""
        return cls(loss, errors, "error", partial(_mean_over_items, loss, errors), augment)


def _mean_over_items(loss: Callable, errors: Callable, batches: Batches) -> dict[str, float]:
    total, wrong, n = 0.0, 0.0, 0
    for outputs, targets in batches:
        total += float(loss(outputs, targets)) * len(outputs)
        wrong += float(errors(outputs, targets).sum())
        n += len(outputs)
    return {"loss": total / n, "error": wrong / n}


def _top1_wrong(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) != targets).float()


def _cross_entropy_summary(batches: Batches) -> dict[str, float]:
    """Mean cross-entropy and the top-1 / top-5 errors of a classifier over a validation pass."""
    total, n, logits_all, targets_all = 0.0, 0, [], []
    for logits, targets in batches:
        total += float(F.cross_entropy(logits, targets, reduction="sum"))
        n += len(targets)
        logits_all.append(logits.cpu())
        targets_all.append(targets.cpu())
    errors = topk_errors(torch.cat(logits_all), torch.cat(targets_all), ks=(1, 5))
    return {"loss": total / n, "top1_error": errors[1], "top5_error": errors[5]}


CROSS_ENTROPY = Objective(F.cross_entropy, _top1_wrong, "top1_error", _cross_entropy_summary)
"""Single-label classification (pretraining, transfer): the default objective of :func:`fit`."""


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
    every checkpoint so a checkpoint folder left from an earlier run never resumes a run made with
    other inputs."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted((tensors or {}).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def capped_run(**caps: int | None) -> dict[str, Any]:
    """The caps in force (params.yaml ``caps``), for a run's :func:`fingerprint`: empty without
    caps, so an uncapped run keeps the fingerprint, and the checkpoints, it had before caps."""
    active = {k: v for k, v in caps.items() if v is not None}
    return {"caps": active} if active else {}


def step_timings(history: pd.DataFrame, train_items: int, cfg: TrainConfig) -> dict[str, float]:
    """SGD steps run and seconds per step: the epochs' wall time (their validation pass included)
    over their steps. The rehearsal's compute table is made of these (README)."""
    per_epoch = math.ceil(train_items / cfg.batch_size)
    steps = len(history) * (per_epoch if cfg.max_steps is None else min(per_epoch, cfg.max_steps))
    seconds = float(history["seconds"].sum()) if len(history) else 0.0
    return {"train_steps": steps, "seconds_per_step": seconds / max(steps, 1)}


def _loader(
    dataset: Dataset, cfg: TrainConfig, shuffle: bool, generator: torch.Generator | None
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=cfg.num_workers,
        persistent_workers=False,
    )


def _train_loader(dataset: Dataset, cfg: TrainConfig, generator: torch.Generator) -> DataLoader:
    """One epoch's shuffled training batches. Capped (``cfg.max_steps``, caps.steps_per_epoch):
    the first ``max_steps`` of the epoch's :func:`global_batches`, which the ranks of
    :func:`train_one_epoch_shared` share too; the generator advances as for a whole epoch."""
    if cfg.max_steps is None:
        return _loader(dataset, cfg, shuffle=True, generator=generator)
    batches = global_batches(len(dataset), cfg.batch_size, generator)[: cfg.max_steps]
    return DataLoader(
        dataset, batch_sampler=[b.tolist() for b in batches], num_workers=cfg.num_workers
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, objective: Objective = CROSS_ENTROPY
) -> dict[str, float]:
    """One validation pass: the objective's mean loss and errors (cross-entropy: top-1 / top-5)."""
    model.eval()
    return objective.summarise((model(x.to(device)), _to(y, device)) for x, y in loader)


@torch.no_grad()
def precompute(
    prefix: nn.Module, dataset: Dataset, batch_size: int, device: torch.device
) -> TensorDataset:
    """Outputs of a frozen, deterministic prefix (eval mode, no jitter) on every item, computed
    once: training the rest on them is the same optimisation as training
    the whole net, far cheaper."""
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


def make_optimiser(
    model: nn.Module, cfg: TrainConfig, desc: str
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """SGD on the trainable parameters (frozen layers stay as they are) and the plateau schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{desc}: the model has no trainable parameter (every layer is frozen)")
    optimiser = torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, mode="min", factor=cfg.lr_factor, patience=cfg.patience
    )
    return optimiser, scheduler


@dataclass
class Run:
    """A training run's parts and progress: what a checkpoint saves and a resumed run restores."""

    model: nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    generator: torch.Generator  # the training loader's shuffling
    run_id: str
    history: list[dict[str, float]] = field(default_factory=list)
    reductions: int = 0
    epoch: int = 0
    finished: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(self.generator),
            "history": self.history,
            "reductions": self.reductions,
            "finished": self.finished,
            "run_id": self.run_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], self.generator)
        self.history, self.reductions = state["history"], state["reductions"]
        self.epoch, self.finished = state["epoch"], bool(state.get("finished"))


def resume(run: Run, checkpointer: Checkpointer | None, device: torch.device, desc: str) -> None:
    """Restore ``run`` from the latest checkpoint written with its ``run_id``; checkpoints of other
    settings or data are deleted rather than resumed. Under several ranks rank 0 reads the folder
    and broadcasts the state (on the CPU; loading moves it to each rank's device)."""
    if distributed.world().size > 1:
        found = checkpointer.latest(map_location="cpu") if checkpointer and _writes() else None
        state = distributed.broadcast(found)
    else:
        state = checkpointer.latest(map_location=device) if checkpointer else None
    if state is not None and state.get("run_id") != run.run_id:
        log.warning(
            "%s: checkpoints in %s come from other settings, data or code; starting afresh",
            desc,
            checkpointer.folder,
        )
        if _writes():
            checkpointer.clear()
        state = None
    if state is not None:
        run.load_state_dict(state)
        _set_rank_rng(state["rng"])


def _writes() -> bool:
    """Whether this process writes checkpoints: rank 0 (the only process outside torchrun)."""
    return distributed.is_main()


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimiser: torch.optim.Optimizer,
    objective: Objective,
    device: torch.device,
    desc: str,
) -> dict[str, float]:
    """One pass of SGD over ``loader``: the training loss and error, averaged over the items."""
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0.0
    for x, y in tqdm(loader, desc=desc, leave=False, unit="batch"):
        x, y = objective.augment(x.to(device), _to(y, device))
        outputs = model(x)
        loss = objective.loss(outputs, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seen += len(x)
        loss_sum += float(loss.detach()) * len(x)
        correct += len(x) - float(objective.errors(outputs.detach(), y).sum())
    return {"train_loss": loss_sum / seen, f"train_{objective.error_name}": 1.0 - correct / seen}


def global_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's index batches exactly as the single-process shuffled loader draws them: it is
    that loader, over indices, so several ranks see the global batches one process would. Walked
    through ``tqdm`` as :func:`train_one_epoch` walks it: ``tqdm.auto``'s asyncio flavour opens one
    extra iterator (one more draw from ``generator``) before the one it yields from."""
    indices = DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator)
    return list(tqdm(indices, disable=True))


def rank_batches(
    batches: list[torch.Tensor], w: distributed.World
) -> tuple[list[list[int]], list[float]]:
    """This rank's contiguous part of each global batch and the weight of its mean loss: its share
    of the batch times the world size, because DDP averages gradients over ranks, so the weighted
    losses give the gradient of the global batch's mean. A rank left with nothing of a short last
    batch takes its first item with weight 0: every rank must step its optimiser (momentum) with
    the averaged gradient, which DDP's Join would not do for a rank that has run out."""
    mine, weights = [], []
    for batch in batches:
        part = batch.tensor_split(w.size)[w.rank]
        mine.append(part.tolist() if len(part) else batch[:1].tolist())
        weights.append(len(part) * w.size / len(batch))
    return mine, weights


def _summed(*values: float) -> list[float]:
    """Each value summed over the ranks in rank order: the same floats on every rank."""
    return [sum(column) for column in zip(*distributed.gather(values), strict=True)]


def train_one_epoch_shared(
    ddp: DistributedDataParallel,
    train_set: Dataset,
    generator: torch.Generator,
    optimiser: torch.optim.Optimizer,
    objective: Objective,
    cfg: TrainConfig,
    device: torch.device,
    desc: str,
) -> dict[str, float]:
    """:func:`train_one_epoch` on several ranks: the global batches of ``cfg.batch_size`` items (the
    first ``cfg.max_steps`` when capped) are shared among them (:func:`rank_batches`); loss and
    error are summed over every rank's items."""
    batches, weights = rank_batches(
        global_batches(len(train_set), cfg.batch_size, generator)[: cfg.max_steps],
        distributed.world(),
    )
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=cfg.num_workers)
    ddp.train()
    seen, loss_sum, correct = 0, 0.0, 0.0
    for (x, y), weight in zip(
        tqdm(loader, desc=desc, leave=False, unit="batch"), weights, strict=True
    ):
        x, y = objective.augment(x.to(device), _to(y, device))
        outputs = ddp(x)
        loss = objective.loss(outputs, y)
        optimiser.zero_grad(set_to_none=True)
        (loss * weight).backward()
        optimiser.step()
        if weight:
            seen += len(x)
            loss_sum += float(loss.detach()) * len(x)
            correct += len(x) - float(objective.errors(outputs.detach(), y).sum())
    seen, loss_sum, correct = _summed(seen, loss_sum, correct)
    return {"train_loss": loss_sum / seen, f"train_{objective.error_name}": 1.0 - correct / seen}


def _cpu(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v.detach().cpu() for k, v in value.items()}
    return value.detach().cpu()


@torch.no_grad()
def evaluate_shared(
    model: nn.Module, val_set: Dataset, cfg: TrainConfig, device: torch.device, objective: Objective
) -> dict[str, float]:
    """:func:`evaluate` on several ranks: each runs a contiguous slice of ``val_set``, and every
    rank summarises all the outputs in the single-process order (the same numbers everywhere)."""
    w = distributed.world()
    part = torch.arange(len(val_set)).tensor_split(w.size)[w.rank].tolist()
    model.eval()
    loader = _loader(Subset(val_set, part), cfg, shuffle=False, generator=None)
    mine = [(_cpu(model(x.to(device))), _cpu(y)) for x, y in loader]
    return objective.summarise([batch for share in distributed.gather(mine) for batch in share])


def _seed_rank(seed: int) -> None:
    """Each rank its own global torch stream (dropout, jitter) so ranks draw different masks;
    rank 0's is the single-process one."""
    rank = distributed.world().rank
    if rank:
        torch.manual_seed(seed + 1_000_003 * rank)


def _rank_rng() -> dict[str, torch.Tensor]:
    """This rank's own global streams: CPU, and its GPU's when it has one (dropout on CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the rank's device (set by distributed.init)
    return state


def _set_rank_rng(rng: dict[str, Any]) -> None:
    """A resumed rank takes back its own global streams, saved by rank 0 for every rank."""
    w, states = distributed.world(), rng.get("ranks")
    if w.size == 1 or states is None or len(states) != w.size:
        return
    torch.set_rng_state(states[w.rank]["torch"])
    if "cuda" in states[w.rank] and torch.cuda.is_available():
        torch.cuda.set_rng_state(states[w.rank]["cuda"])


def _save_checkpoint(run: Run, checkpointer: Checkpointer | None) -> None:
    """Rank 0 writes the run's state (with every rank's streams when there are several)."""
    if checkpointer is None:
        return
    state = run.state_dict()
    if distributed.world().size > 1:
        state["rng"]["ranks"] = distributed.gather(_rank_rng())
    if _writes():
        checkpointer.save(run.epoch, state)


def _ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


def step_schedule(run: Run, losses: dict[str, float], cfg: TrainConfig, desc: str) -> float:
    """Feed the ``cfg.plateau_on`` loss (``losses``: ``train`` and ``val``) to the plateau schedule;
    return the epoch's lr and mark the run finished at the plateau after ``cfg.max_reductions``
    reductions or at ``cfg.max_epochs``. The thesis watches the training loss (§3.3): tiny held-out
    sets made the lr cuts, and so where training stopped, fall on noise."""
    lr = run.optimiser.param_groups[0]["lr"]
    run.scheduler.step(losses[cfg.plateau_on])
    new_lr = run.optimiser.param_groups[0]["lr"]
    if new_lr < lr:
        run.reductions += 1
        log.info(
            "%s: %s loss plateaued, lr %.2g → %.2g (%d)",
            desc,
            cfg.plateau_on,
            lr,
            new_lr,
            run.reductions,
        )
    run.finished = run.reductions > cfg.max_reductions or run.epoch == cfg.max_epochs
    return lr


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    checkpointer: Checkpointer | None,
    desc: str = "train",
    run_id: str = "",
    objective: Objective = CROSS_ENTROPY,
) -> pd.DataFrame:
    """Train ``model`` in place; return the per-epoch history (column ``step``).

    Each epoch is :func:`train_one_epoch`, :func:`evaluate` on ``val_set``, :func:`step_schedule`
    and a checkpoint (:meth:`Run.state_dict`). The lr starts at ``cfg.lr`` and is multiplied by
    ``cfg.lr_factor`` when the validation loss has not improved for ``cfg.patience`` epochs.
    ``run_id`` (see :func:`fingerprint`) identifies the inputs and :func:`code_digest` the code
    of the loop, the model and the objective: checkpoints written under another id are discarded
    instead of resumed. Inside a process group of several ranks the epochs are
    :func:`train_one_epoch_shared` and :func:`evaluate_shared` (DDP, see the module docstring).
    """
    model.to(device)
    optimiser, scheduler = make_optimiser(model, cfg, desc)
    run_id = f"{run_id}/{code_digest(fit, type(model), type(objective))}"  # the loop, net, loss
    run = Run(model, optimiser, scheduler, torch.Generator().manual_seed(cfg.seed), run_id)
    torch.manual_seed(cfg.seed)
    shared = distributed.world().size > 1
    if shared:
        _seed_rank(cfg.seed)
    resume(run, checkpointer, device, desc)
    if run.finished:
        log.info("%s: already finished at epoch %d", desc, run.epoch)
        return pd.DataFrame(run.history)
    ddp = _ddp(model, device) if shared else None
    val_loader = _loader(val_set, cfg, shuffle=False, generator=None)
    todo = range(run.epoch + 1, cfg.max_epochs + 1)
    epochs = tqdm(todo, desc=desc, unit="epoch", initial=run.epoch, total=cfg.max_epochs)
    for run.epoch in epochs:
        tic = time.perf_counter()
        if ddp is not None:
            train = train_one_epoch_shared(
                ddp,
                train_set,
                run.generator,
                optimiser,
                objective,
                cfg,
                device,
                f"epoch {run.epoch}",
            )
            val = evaluate_shared(model, val_set, cfg, device, objective)
        else:
            train_loader = _train_loader(train_set, cfg, run.generator)
            train = train_one_epoch(
                model, train_loader, optimiser, objective, device, f"epoch {run.epoch}"
            )
            val = evaluate(model, val_loader, device, objective)
        lr = step_schedule(run, {"train": train["train_loss"], "val": val["loss"]}, cfg, desc)
        row = {"step": run.epoch, "lr": lr, **train, **{f"val_{k}": v for k, v in val.items()}}
        run.history.append({**row, "seconds": time.perf_counter() - tic})
        epochs.set_postfix(
            val_loss=f"{val['loss']:.3f}", val_err=f"{val[objective.error_name]:.3f}"
        )
        _save_checkpoint(run, checkpointer)
        if run.finished:
            break
    return pd.DataFrame(run.history)
