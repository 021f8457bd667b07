"""Adversarial training of a DCGAN with snapshots, resumable per-epoch checkpoints and sampling.

One training run serves every epoch row of Tables C.1/C.2: the generator's weights are kept at
each requested snapshot epoch. All randomness of epoch ``e`` (minibatch order, noise) comes
from a generator seeded with ``(seed, e)``, so a run resumed from the checkpoint of epoch
``e − 1`` gives the same weights as an uninterrupted one (on CPU).

Also here: the raw-pixel C2ST classifier, a discriminator-shaped CNN wrapped as a scikit-learn
classifier so :func:`oquab_repro.lib.twosample.c2st` runs it like KNN and NN.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.models.dcgan import Discriminator, Generator

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


def train_gan(
    images: Dataset | Sequence[torch.Tensor],
    cfg: GanConfig,
    checkpointer: Checkpointer,
    device: torch.device,
    num_workers: int = 0,
    desc: str = "dcgan",
) -> tuple[dict[int, State], pd.DataFrame]:
    """Train on ``images`` (items 3×S×S in [-1, 1]); return generator weights per snapshot epoch and the history.

    Resumes from ``checkpointer``'s latest epoch when there is one (stopping right away when it
    already covers every snapshot).
    """
    if (shape := tuple(images[0].shape)) != (3, cfg.image_size, cfg.image_size):
        raise ValueError(f"train_gan expects 3×{cfg.image_size}×{cfg.image_size} images, got {shape}")
    torch.manual_seed(cfg.seed)
    gen, disc = Generator(cfg.gf, cfg.image_size).to(device), Discriminator(cfg.df, cfg.image_size).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    snapshots: dict[int, State] = {}
    history: list[dict[str, float]] = []
    start = 1
    fingerprint = {**asdict(cfg), "snapshot_epochs": None, "images": len(images)}
    state = checkpointer.latest(map_location=device)
    if state is not None and not _resumable(state, fingerprint, cfg.snapshot_epochs):
        log.warning("Checkpoints in %s come from another configuration; training from scratch.", checkpointer.folder)
        state = None
    if state is not None:
        gen.load_state_dict(state["generator"])
        disc.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        snapshots, history, start = state["snapshots"], state["history"], state["epoch"] + 1
    n = len(images) - len(images) % cfg.batch_size  # full batches only: batch norm sees equal-size batches
    if n == 0:
        raise ValueError(f"{len(images)} training images are fewer than one batch of {cfg.batch_size}")
    ones = torch.ones(cfg.batch_size, device=device)
    zeros = torch.zeros(cfg.batch_size, device=device)
    for epoch in tqdm(range(start, cfg.epochs + 1), desc=desc, unit="epoch", initial=start - 1, total=cfg.epochs):
        rng = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(len(images), generator=rng)[:n]
        noise = torch.randn(n, gen.noise_dim, generator=rng)
        batches = order.view(-1, cfg.batch_size).tolist()
        loader = DataLoader(images, batch_sampler=batches, num_workers=num_workers)
        sums = np.zeros(4)
        tic = time.perf_counter()
        for b, real in enumerate(loader):
            real = real.to(device)
            fake = gen(noise[b * cfg.batch_size : (b + 1) * cfg.batch_size].to(device))
            out_real, out_fake = disc(real), disc(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(out_real, ones) + F.binary_cross_entropy_with_logits(out_fake, zeros)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            loss_g = F.binary_cross_entropy_with_logits(disc(fake), ones)  # non-saturating generator loss
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums += [loss_d.item(), loss_g.item(), torch.sigmoid(out_real).mean().item(), torch.sigmoid(out_fake).mean().item()]
        steps = n // cfg.batch_size
        history.append(
            {"step": epoch, "loss_d": sums[0] / steps, "loss_g": sums[1] / steps, "d_real": sums[2] / steps,
             "d_fake": sums[3] / steps, "seconds_per_step": (time.perf_counter() - tic) / steps}
        )  # fmt: skip
        if epoch in cfg.snapshot_epochs:
            snapshots[epoch] = _cpu_state(gen)
        checkpointer.save(
            epoch,
            {"generator": gen.state_dict(), "discriminator": disc.state_dict(), "opt_g": opt_g.state_dict(),
             "opt_d": opt_d.state_dict(), "snapshots": snapshots, "history": history, "fingerprint": fingerprint},
        )  # fmt: skip
    return {e: snapshots[e] for e in sorted(snapshots)}, pd.DataFrame(history)


@torch.no_grad()
def sample(state: State, gf: int, image_size: int, n: int, seed: int, batch: int = 500) -> torch.Tensor:
    """``n`` images (CPU, in [-1, 1]) from a generator snapshot, with fixed noise for a given ``seed``.

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

    def __init__(self, df: int = 16, epochs: int = 5, lr: float = 2e-4, batch_size: int = 64, seed: int = 0):
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
            for b in range(0, len(xt) - 1, self.batch_size):  # skip a final batch of one (batch norm)
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
    """A :data:`oquab_repro.lib.twosample.ClassifierFactory` building :class:`DiscriminatorClassifier`."""

    def build(n_test: int, seed: int = 0) -> DiscriminatorClassifier:
        return DiscriminatorClassifier(df=df, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)

    return build


def image_grid_array(images: torch.Tensor, nrow: int) -> np.ndarray:
    """A H×W×3 uint8 mosaic of images in [-1, 1] (torchvision's ``make_grid``)."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=nrow, normalize=True, value_range=(-1, 1), padding=1)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

