"""Ensembles of small conditional GANs trained at once, as one vectorised model (§5.4.2).

The causal experiment trains E CGANs per direction and pair. They are tiny (one hidden layer), so
training them one after the other is dominated by Python and autograd overhead; stacking the M
members' parameters on a leading axis (``torch.func.stack_module_state``) turns every layer into
one batched matmul (``torch.func.vmap`` or ``torch.baddbmm``) for the price of one model.

Members are independent: the loss is the sum of per-member losses, whose gradients do not mix, and
Adam is element-wise, so one Adam over the stacked tensors is exactly M independent Adams. All
randomness (initialisation, batch order, noise z, dropout masks) is drawn for the whole ensemble
from one seeded generator and then shared with the ``loop`` backend, so the vectorised and the
looped ensembles are the same computation (see tests/test_ensembles.py).

Losses (5.8), with smoothed labels r (real) and f (fake) and σ the logistic function:
  discriminator: −E[r log σ(d(x, y)) + (1−r) log(1−σ(d(x, y)))] − E[f log σ(d(x, ŷ)) + (1−f) log(1−σ(d(x, ŷ)))]
  generator (non-saturating): −E[r log σ(d(x, ŷ)) + (1−r) log(1−σ(d(x, ŷ)))],  ŷ = g(x, z), z ~ N(0, I).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from oquab_repro.lib.models.cgan import MLP, discriminator, generator, stacked_forward

Backend = Literal["vmap", "bmm", "loop"]
Forward = Callable[[dict[str, Tensor], Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class CGANConfig:
    """Everything that defines one CGAN's training, identical for every member."""

    noise_dim: int
    hidden: int
    dropout: float
    lr: float
    beta1: float
    beta2: float
    real_label: float
    fake_label: float
    epochs: int
    batch_size: int


@dataclass(frozen=True)
class StepNoise:
    """The random draws of one training step, for all M members."""

    index: Tensor  # (M, B) rows of the batch
    z: Tensor  # (M, B, noise_dim)
    keep_g: Tensor  # (M, B, hidden) generator dropout keep-mask, scaled
    keep_d: Tensor  # (M, 2B, hidden) discriminator keep-mask for [real; fake], scaled


def _keep(shape: tuple[int, ...], p: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    if p == 0:
        return torch.ones(shape, dtype=dtype)
    return (torch.rand(shape, generator=gen) >= p).to(dtype) / (1 - p)  # several times faster than bernoulli_


def step_noise(members: int, n: int, cfg: CGANConfig, gen: torch.Generator, dtype: torch.dtype) -> Iterator[StepNoise]:
    """Per-step randomness: each epoch every member visits its n rows in its own random order."""
    batch = min(cfg.batch_size, n)
    for _ in range(cfg.epochs):
        order = torch.argsort(torch.rand(members, n, generator=gen), dim=1)
        for start in range(0, n - batch + 1, batch):  # drop the ragged last batch: equal shapes
            yield StepNoise(
                order[:, start : start + batch],
                torch.randn(members, batch, cfg.noise_dim, generator=gen, dtype=dtype),
                _keep((members, batch, cfg.hidden), cfg.dropout, gen, dtype),
                _keep((members, 2 * batch, cfg.hidden), cfg.dropout, gen, dtype),
            )


def steps_per_run(n: int, cfg: CGANConfig) -> int:
    return cfg.epochs * (n // min(cfg.batch_size, n))


def init_members(members: int, cond_dim: int, target_dim: int, cfg: CGANConfig, seed: int) -> tuple[list[MLP], list[MLP]]:
    """M generators and discriminators with PyTorch's default initialisation, reproducibly seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gens = [generator(cond_dim, cfg.noise_dim, cfg.hidden, target_dim) for _ in range(members)]
        discs = [discriminator(cond_dim, target_dim, cfg.hidden) for _ in range(members)]
    return gens, discs


def _gather(data: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` (M, B) of ``data`` (M, n, d) → (M, B, d)."""
    return torch.gather(data, 1, index.unsqueeze(-1).expand(-1, -1, data.shape[-1]))


def _bce(logits: Tensor, target: float) -> Tensor:
    """Per-member mean BCE with a (smoothed) constant target → (M,)."""
    loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none")
    return loss.flatten(1).mean(1)


def _vmap_forward(template: MLP) -> Forward:
    base = copy.deepcopy(template).to("meta")

    def one(params: dict[str, Tensor], inputs: Tensor, keep: Tensor | None) -> Tensor:
        return functional_call(base, params, (inputs, keep))

    batched = vmap(one)
    return lambda params, inputs, keep: batched(params, inputs, keep)


@dataclass
class CGANEnsemble:
    """M trained generators, stacked; ``sample`` draws ŷ = g_m(x_m, z) for every member at once."""

    generator_params: dict[str, Tensor]
    config: CGANConfig

    @torch.no_grad()
    def sample(self, cond: Tensor, seed: int) -> Tensor:
        """(M, n, target_dim) samples given conditions ``cond`` (M, n, cond_dim); no dropout at test time."""
        params = self.generator_params
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(cond.shape[0], cond.shape[1], self.config.noise_dim, generator=gen, dtype=cond.dtype)
        return stacked_forward(params, torch.cat([cond, z.to(cond.device)], dim=-1))


def train_cgan_ensemble(
    cond: Tensor,
    target: Tensor,
    cfg: CGANConfig,
    seed: int,
    backend: Backend = "bmm",
    progress: bool = False,
) -> CGANEnsemble:
    """Train M CGANs, member m on the pairs (``cond[m]``, ``target[m]``), each (n, dim).

    ``backend`` picks how the M members run: ``bmm`` (batched matmuls), ``vmap``
    (``torch.func.vmap`` over ``functional_call``) or ``loop`` (one member after another: the
    reference the vectorised backends must reproduce, and the benchmark's baseline).
    """
    if cond.ndim != 3 or target.ndim != 3 or cond.shape[:2] != target.shape[:2]:
        raise ValueError(f"cond and target must be (M, n, dim) with equal M, n; got {tuple(cond.shape)}, {tuple(target.shape)}")
    members, n = cond.shape[:2]
    gens, discs = init_members(members, cond.shape[2], target.shape[2], cfg, seed)
    device, dtype = cond.device, cond.dtype
    gen = torch.Generator().manual_seed(seed)
    noise = step_noise(members, n, cfg, gen, dtype)
    noise = tqdm(noise, total=steps_per_run(n, cfg), desc=f"CGAN ensemble x{members}", unit="step", disable=not progress, leave=False)
    if backend == "loop":
        g_params = _train_loop(cond, target, gens, discs, cfg, noise)
    else:
        g_params, _ = stack_module_state([g.to(device, dtype) for g in gens])
        d_params, _ = stack_module_state([d.to(device, dtype) for d in discs])
        forward_g = _vmap_forward(gens[0]) if backend == "vmap" else stacked_forward
        forward_d = _vmap_forward(discs[0]) if backend == "vmap" else stacked_forward
        _train_stacked(cond, target, g_params, d_params, forward_g, forward_d, cfg, noise)
    return CGANEnsemble({k: v.detach() for k, v in g_params.items()}, cfg)


def _adam(params: list[Tensor], cfg: CGANConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)


def _train_stacked(
    cond: Tensor,
    target: Tensor,
    g_params: dict[str, Tensor],
    d_params: dict[str, Tensor],
    forward_g: Forward,
    forward_d: Forward,
    cfg: CGANConfig,
    noise: Iterator[StepNoise],
) -> None:
    opt_g, opt_d = _adam(list(g_params.values()), cfg), _adam(list(d_params.values()), cfg)
    device = cond.device
    for step in noise:
        index = step.index.to(device)
        x, y = _gather(cond, index), _gather(target, index)
        keep_d = step.keep_d.to(device)
        fake = forward_g(g_params, torch.cat([x, step.z.to(device)], -1), step.keep_g.to(device))
        # discriminator step on [real; fake]
        logits = forward_d(d_params, torch.cat([torch.cat([x, y], -1), torch.cat([x, fake.detach()], -1)], 1), keep_d)
        batch = x.shape[1]
        loss_d = _bce(logits[:, :batch], cfg.real_label) + _bce(logits[:, batch:], cfg.fake_label)
        opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()
        opt_d.step()
        # generator step through the updated discriminator
        loss_g = _bce(forward_d(d_params, torch.cat([x, fake], -1), keep_d[:, batch:]), cfg.real_label)
        opt_g.zero_grad(set_to_none=True)
        loss_g.sum().backward()
        opt_g.step()


def _train_loop(
    cond: Tensor, target: Tensor, gens: list[MLP], discs: list[MLP], cfg: CGANConfig, noise: Iterator[StepNoise]
) -> dict[str, Tensor]:
    device, dtype = cond.device, cond.dtype
    gens = [g.to(device, dtype) for g in gens]
    discs = [d.to(device, dtype) for d in discs]
    opts = [(_adam(list(g.parameters()), cfg), _adam(list(d.parameters()), cfg)) for g, d in zip(gens, discs, strict=True)]
    for step in noise:
        batch = step.index.shape[1]
        for m, (g, d) in enumerate(zip(gens, discs, strict=True)):
            opt_g, opt_d = opts[m]
            index = step.index[m].to(device)
            x, y = cond[m, index], target[m, index]
            keep_d = step.keep_d[m].to(device)
            fake = g(torch.cat([x, step.z[m].to(device)], -1), step.keep_g[m].to(device))
            logits = d(torch.cat([torch.cat([x, y], -1), torch.cat([x, fake.detach()], -1)], 0), keep_d)
            loss_d = _bce(logits[None, :batch], cfg.real_label) + _bce(logits[None, batch:], cfg.fake_label)
            opt_d.zero_grad(set_to_none=True)
            loss_d.sum().backward()
            opt_d.step()
            loss_g = _bce(d(torch.cat([x, fake], -1), keep_d[batch:])[None], cfg.real_label)
            opt_g.zero_grad(set_to_none=True)
            loss_g.sum().backward()
            opt_g.step()
    params, _ = stack_module_state(gens)
    return params
