"""Adversarial training of a DCGAN with snapshots, resumable per-epoch checkpoints and sampling.

One training run serves every epoch row of Tables C.1/C.2: the generator's weights are kept at
each requested snapshot epoch, and one loop trains a whole grid of models at once (grouped
convolutions, see :mod:`oquab_repro.lib.models.dcgan`). All randomness of epoch ``e`` (minibatch
order, noise) comes from a generator seeded with ``(seed, e)``, so a run resumed from the checkpoint
of epoch ``e − 1`` gives the same weights as an uninterrupted one (on CPU).

Also here: the raw-pixel C2ST classifier, a discriminator-shaped CNN wrapped as a scikit-learn
classifier so :func:`oquab_repro.lib.twosample.c2st` runs it like KNN and NN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer, code_digest
from oquab_repro.lib.models.dcgan import (
    NOISE_DIM,
    Discriminator,
    Generator,
    split_state,
    stack_states,
)

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class GanConfig:
    """What one DCGAN training run needs (Appendix C: Adam, lr 2e-4, β1 0.5)."""

    gf: int
    df: int
    image_size: int
    batch_size: int
    lr: float
    beta1: float
    snapshot_epochs: tuple[int, ...]
    seed: int

    @property
    def epochs(self) -> int:
        return max(self.snapshot_epochs)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _cpu_state(module: torch.nn.Module) -> State:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _resumable(state: dict, fingerprint: dict, snapshot_epochs: tuple[int, ...]) -> bool:
    """A checkpoint fits when it has the same configuration (snapshot list aside) and every snapshot
    epoch it has passed was kept, i.e. when continuing it gives what a fresh run would."""
    epoch = state["epoch"]
    return (
        state.get("fingerprint") == fingerprint
        and epoch <= max(snapshot_epochs)
        and all(e in state["snapshots"] for e in snapshot_epochs if e <= epoch)
    )


def _groups(widths: Sequence[int]) -> dict[int, list[int]]:
    """Model indices by width: the models one grouped network holds."""
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(widths):
        groups.setdefault(w, []).append(i)
    return groups


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of each model's logits (B, M) against one target: (M,)."""
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, target), reduction="none"
    ).mean(0)


class GanGrid:
    """The DCGANs of a grid held as grouped networks (generators by gf, discriminators by df) with
    their two Adam optimisers: one forward per layer and width trains every model.

    Each model starts from the weights a lone run of its config would draw. Adam is elementwise,
    so one optimiser over every model's weights updates each as its own would.
    """

    def __init__(self, cfgs: Sequence[GanConfig], device: torch.device):
        cfg, size = cfgs[0], cfgs[0].image_size
        starts = []
        for c in cfgs:  # the initial weights of a lone run of each config
            torch.manual_seed(c.seed)
            starts.append(
                (Generator(c.gf, size).state_dict(), Discriminator(c.df, size).state_dict())
            )
        self.models = len(cfgs)
        self.g_groups, self.d_groups = _groups([c.gf for c in cfgs]), _groups([c.df for c in cfgs])
        self.gens = {w: Generator(w, size, models=len(ix)) for w, ix in self.g_groups.items()}
        self.discs = {w: Discriminator(w, size, models=len(ix)) for w, ix in self.d_groups.items()}
        for w, ix in self.g_groups.items():
            self.gens[w].load_state_dict(stack_states([starts[i][0] for i in ix]))
        for w, ix in self.d_groups.items():
            self.discs[w].load_state_dict(stack_states([starts[i][1] for i in ix]))
        for net in (*self.gens.values(), *self.discs.values()):
            net.to(device)
        betas = (cfg.beta1, 0.999)
        self.opt_g = torch.optim.Adam(
            [p for g in self.gens.values() for p in g.parameters()], lr=cfg.lr, betas=betas
        )
        self.opt_d = torch.optim.Adam(
            [p for d in self.discs.values() for p in d.parameters()], lr=cfg.lr, betas=betas
        )
        d_order = [i for ix in self.d_groups.values() for i in ix]
        self.to_model_order = torch.argsort(
            torch.tensor(d_order)
        )  # concatenated logits → model index

    def generate(self, z: torch.Tensor, like: torch.Tensor) -> list[torch.Tensor]:
        """Each model's images from the same noise ``z`` (``like``: a real batch, for the shape)."""
        fakes: list[torch.Tensor] = [like] * self.models
        for w, ix in self.g_groups.items():
            for j, image in zip(
                ix, self.gens[w](z.repeat(1, len(ix))).split(3, dim=1), strict=True
            ):
                fakes[j] = image
        return fakes

    def discriminate(self, per_model: list[torch.Tensor]) -> torch.Tensor:
        """Logits (B, M) of each model's discriminator on its own images."""
        outs = [
            self.discs[w](torch.cat([per_model[i] for i in ix], 1)).view(len(per_model[0]), -1)
            for w, ix in self.d_groups.items()
        ]
        return torch.cat(outs, 1)[:, self.to_model_order]

    def step(self, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One adversarial update of every model: (loss_d, loss_g, D(real), D(fake)) × M."""
        fakes = self.generate(z, real)
        out_real = self.discriminate([real] * self.models)
        out_fake = self.discriminate([f.detach() for f in fakes])
        loss_d = _bce(out_real, 1.0) + _bce(out_fake, 0.0)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()  # models share no weights: each gets its own gradient
        self.opt_d.step()
        loss_g = _bce(self.discriminate(fakes), 1.0)  # non-saturating generator loss
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.sum().backward()
        self.opt_g.step()
        stats = [loss_d, loss_g, torch.sigmoid(out_real).mean(0), torch.sigmoid(out_fake).mean(0)]
        return torch.stack(stats).detach().cpu()

    def generator_states(self) -> list[State]:
        """Each model's generator weights (CPU copies), in config order."""
        per_model: list[State] = [{} for _ in range(self.models)]
        for w, ix in self.g_groups.items():
            for i, s in zip(ix, split_state(_cpu_state(self.gens[w]), len(ix)), strict=True):
                per_model[i] = s
        return per_model

    def state_dict(self) -> dict:
        return {
            "generators": {w: g.state_dict() for w, g in self.gens.items()},
            "discriminators": {w: d.state_dict() for w, d in self.discs.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for w in self.gens:
            self.gens[w].load_state_dict(state["generators"][w])
        for w in self.discs:
            self.discs[w].load_state_dict(state["discriminators"][w])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


def _check(images: Dataset | Sequence[torch.Tensor], cfgs: Sequence[GanConfig]) -> int:
    """The configs train together (they differ only in gf and df) on these images; returns the
    number of images in full batches (batch norm sees equal-size batches)."""
    cfg = cfgs[0]
    if any(replace(c, gf=cfg.gf, df=cfg.df) != cfg for c in cfgs):
        raise ValueError("train_gans: configs trained together may differ only in gf and df")
    if (shape := tuple(images[0].shape)) != (3, cfg.image_size, cfg.image_size):
        raise ValueError(
            f"train_gans expects 3×{cfg.image_size}×{cfg.image_size} images, got {shape}"
        )
    n = len(images) - len(images) % cfg.batch_size
    if n == 0:
        raise ValueError(
            f"{len(images)} training images are fewer than one batch of {cfg.batch_size}"
        )
    return n


def train_gan_epoch(
    grid: GanGrid,
    images: Dataset | Sequence[torch.Tensor],
    n: int,
    cfg: GanConfig,
    epoch: int,
    device: torch.device,
    num_workers: int,
) -> list[dict[str, float]]:
    """One epoch of every model on the same minibatches and noise, drawn from ``(seed, epoch)``:
    each model's mean losses and discriminator outputs (one history row per model)."""
    rng = _epoch_generator(cfg.seed, epoch)
    order = torch.randperm(len(images), generator=rng)[:n]
    noise = torch.randn(n, NOISE_DIM, generator=rng)
    loader = DataLoader(
        images, batch_sampler=order.view(-1, cfg.batch_size).tolist(), num_workers=num_workers
    )
    sums = torch.zeros(4, grid.models)
    tic = time.perf_counter()
    for b, real in enumerate(loader):
        z = noise[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(device)
        sums += grid.step(real.to(device), z)
    steps = n // cfg.batch_size
    seconds = (time.perf_counter() - tic) / steps
    rows = []
    for m in range(grid.models):
        d_loss, g_loss, d_real, d_fake = (sums[:, m] / steps).tolist()
        rows.append(
            {
                "step": epoch,
                "loss_d": d_loss,
                "loss_g": g_loss,
                "d_real": d_real,
                "d_fake": d_fake,
                "seconds_per_step": seconds,
            }
        )
    return rows


def train_gans(
    images: Dataset | Sequence[torch.Tensor],
    cfgs: Sequence[GanConfig],
    checkpointer: Checkpointer,
    device: torch.device,
    num_workers: int = 0,
    desc: str = "dcgan",
) -> list[tuple[dict[int, State], pd.DataFrame]]:
    """Train one DCGAN per config on ``images`` (items 3×S×S in [-1, 1]), all in one loop.

    The configs may differ only in gf and df. Each model sees the same minibatches and noise as a
    lone run of its config (:class:`GanGrid`, :func:`train_gan_epoch`). Returns, per config, the
    generator weights at each snapshot epoch and the history. Resumes from ``checkpointer``'s
    latest epoch when it was written with the same configs.
    """
    n, cfg = _check(images, cfgs), cfgs[0]
    grid = GanGrid(cfgs, device)
    snapshots: dict[int, list[State]] = {}
    histories: list[list[dict[str, float]]] = [[] for _ in cfgs]
    start = 1
    fingerprint = {
        "models": [{**asdict(c), "snapshot_epochs": None} for c in cfgs],
        "images": len(images),
        "code": code_digest(GanGrid, Generator),  # a checkpoint of other code is never resumed
    }
    state = checkpointer.latest(map_location=device)
    if state is not None and not _resumable(state, fingerprint, cfg.snapshot_epochs):
        log.warning(
            "Checkpoints in %s come from another configuration; training from scratch.",
            checkpointer.folder,
        )
        state = None
    if state is not None:
        grid.load_state_dict(state)
        snapshots, histories, start = state["snapshots"], state["history"], state["epoch"] + 1
    for epoch in tqdm(
        range(start, cfg.epochs + 1), desc=desc, unit="epoch", initial=start - 1, total=cfg.epochs
    ):
        for history, row in zip(
            histories,
            train_gan_epoch(grid, images, n, cfg, epoch, device, num_workers),
            strict=True,
        ):
            history.append(row)
        if epoch in cfg.snapshot_epochs:
            snapshots[epoch] = grid.generator_states()
        progress = {"snapshots": snapshots, "history": histories, "fingerprint": fingerprint}
        checkpointer.save(epoch, {**grid.state_dict(), **progress})
    return [
        ({e: snapshots[e][m] for e in cfg.snapshot_epochs}, pd.DataFrame(histories[m]))
        for m in range(len(cfgs))
    ]


@torch.no_grad()
def sample(
    state: State, gf: int, image_size: int, n: int, seed: int, batch: int = 500
) -> torch.Tensor:
    """``n`` images (CPU, in [-1, 1]) from a generator snapshot, with fixed
    noise for a given ``seed``.

    The generator runs in eval mode (batch norm with running statistics), as when a trained
    model is used to produce images.
    """
    gen = Generator(gf, image_size)
    gen.load_state_dict(state)
    gen.eval()
    noise = torch.randn(n, gen.noise_dim, generator=torch.Generator().manual_seed(seed))
    return torch.cat([gen(noise[i : i + batch]) for i in range(0, n, batch)])


class DiscriminatorClassifier(ClassifierMixin, BaseEstimator):
    """A DCGAN discriminator trained as a binary classifier on raw pixels (the pixel-space C2ST).

    scikit-learn interface (``fit``/``predict`` on arrays of shape N×3×S×S) so it plugs into
    :func:`oquab_repro.lib.twosample.c2st`; trained with Adam and binary cross-entropy.
    """

    def __init__(
        self, df: int = 16, epochs: int = 5, lr: float = 2e-4, batch_size: int = 64, seed: int = 0
    ):
        self.df, self.epochs, self.lr, self.batch_size, self.seed = df, epochs, lr, batch_size, seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> DiscriminatorClassifier:
        torch.manual_seed(self.seed)
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
        self.net_ = Discriminator(self.df, xt.shape[-1])
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, betas=(0.5, 0.999))
        gen = torch.Generator().manual_seed(self.seed)
        self.net_.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(xt), generator=gen)
            for b in range(
                0, len(xt) - 1, self.batch_size
            ):  # skip a final batch of one (batch norm)
                idx = order[b : b + self.batch_size]
                if len(idx) < 2:
                    continue
                loss = F.binary_cross_entropy_with_logits(self.net_(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.classes_ = np.array([0.0, 1.0])
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net_.eval()
        xt = torch.as_tensor(x, dtype=torch.float32)
        logits = torch.cat([self.net_(xt[i : i + 500]) for i in range(0, len(xt), 500)])
        return (logits > 0).numpy().astype(np.float64)


def discriminator_classifier(df: int, epochs: int, lr: float, batch_size: int):
    """A :data:`oquab_repro.lib.twosample.ClassifierFactory` building
    :class:`DiscriminatorClassifier`."""

    def build(n_test: int, seed: int = 0) -> DiscriminatorClassifier:
        return DiscriminatorClassifier(
            df=df, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed
        )

    return build


def image_grid_array(images: torch.Tensor, nrow: int) -> np.ndarray:
    """A H×W×3 uint8 mosaic of images in [-1, 1] (torchvision's ``make_grid``)."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1), padding=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
