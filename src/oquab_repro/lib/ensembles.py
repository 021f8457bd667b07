"""Ensembles of small conditional GANs trained at once, as one vectorised model (§5.4.2).

The causal experiment trains E CGANs per direction and pair. They are tiny (one hidden layer), so
training them one after the other is dominated by Python and autograd overhead; stacking the
members' parameters on a leading axis (``torch.func.stack_module_state``) turns every layer into
one batched matmul for the price of one model.

Work is organised in **units**: the members of one unit share a data size and one seeded random
stream (in the causal stage, a unit is one pair's 2E CGANs). Units are independent: the loss is the
sum of per-member losses, whose gradients do not mix, and Adam is element-wise, so one Adam over the
stacked tensors is exactly independent Adams. Every random draw of a unit (initialisation, batch
order, noise z, dropout masks, final samples) comes from the unit's own generator, so a unit gives
the same result whether it is trained alone or packed with others, in any order, by any process
(:func:`train_units`); units of different sizes are packed together and a unit leaves the stacked
model (its slices of the parameters and of Adam's moments are dropped) when its last epoch ends.

Training follows the original code (lopezpaz/classifier_tests, ``code/gan_tuebingen/tuebingen.lua``
with ``metal.lua``), where the thesis is silent:
  * minibatches of B rows in a new random order each epoch; updates **alternate**: even steps train
    the discriminator, odd steps the generator (one counter across epochs);
  * a discriminator step pools the batch's B generated rows (label ``fake_label``, generator in
    evaluation mode: no dropout) with its B real rows (``real_label``), shuffles the 2B rows and
    makes one Adam step per B of them (two steps);
  * a generator step backpropagates BCE(d(x, g(x, z)), ``real_label``) through the discriminator
    (both with dropout) and updates the generator only;
  * after training, ŷ = g(x, z) with fresh z for every x, generator in evaluation mode.
One deliberate difference: the ragged last batch of an epoch is dropped (the original trains on it
with mis-aligned labels), so every step has the same shape.

Losses (5.8) with smoothed labels r (real) and f (fake), σ the logistic function:
  discriminator: −E[r log σ(d(x, y)) + (1−r) log(1−σ(d(x, y)))]
                 − E[f log σ(d(x, ŷ)) + (1−f) log(1−σ(d(x, ŷ)))]
  generator (non-saturating): −E[r log σ(d(x, ŷ)) + (1−r) log(1−σ(d(x, ŷ)))],
                              ŷ = g(x, z), z ~ N(0, I).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import stack_module_state
from tqdm.auto import tqdm

from oquab_repro.lib.models.cgan import MLP, discriminator, generator, stacked_forward

Backend = Literal["bmm", "loop"]


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


@dataclass
class EnsembleUnit:
    """Members trained on one data size with one random stream: member m
    learns ``cond[m] → target[m]``.

    ``cond`` and ``target`` are (m, n, dim); ``seed`` alone decides every random draw of the unit.
    """

    cond: Tensor
    target: Tensor
    seed: int
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if (
            self.cond.ndim != 3
            or self.target.ndim != 3
            or self.cond.shape[:2] != self.target.shape[:2]
        ):
            raise ValueError(
                "cond and target must be (m, n, dim) with equal m, n; got"
                f" {tuple(self.cond.shape)}, {tuple(self.target.shape)}"
            )
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def members(self) -> int:
        return self.cond.shape[0]

    @property
    def n(self) -> int:
        return self.cond.shape[1]


def steps_per_epoch(n: int, cfg: CGANConfig) -> int:
    """Full batches per epoch (the ragged last batch is dropped)."""
    if n < cfg.batch_size:
        raise ValueError(
            f"a pair of {n} points is smaller than one batch ({cfg.batch_size}); lower the batch"
            " size"
        )
    return n // cfg.batch_size


def steps_per_run(n: int, cfg: CGANConfig) -> int:
    return cfg.epochs * steps_per_epoch(n, cfg)


def init_members(unit: EnsembleUnit, cfg: CGANConfig) -> tuple[list[MLP], list[MLP]]:
    """The unit's generators and discriminators with PyTorch's default
    initialisation, seeded by the unit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(unit.seed)
        gens = [
            generator(unit.cond.shape[2], cfg.noise_dim, cfg.hidden, unit.target.shape[2])
            for _ in range(unit.members)
        ]
        discs = [
            discriminator(unit.cond.shape[2], unit.target.shape[2], cfg.hidden)
            for _ in range(unit.members)
        ]
    return gens, discs


def _keep(shape: tuple[int, ...], p: float, gen: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Dropout keep-mask scaled by 1/(1−p) (several times faster than ``bernoulli_``)."""
    if p == 0:
        return torch.ones(shape, dtype=dtype)
    return (torch.rand(shape, generator=gen) >= p).to(dtype) / (1 - p)


@dataclass
class _Draws:
    """One step's random draws of the active units, concatenated over their members."""

    index: Tensor  # (M, B) rows of the batch
    z: Tensor  # (M, B, noise_dim)
    mix: Tensor | None  # (M, 2B) order of the pooled [fake; real] rows (discriminator steps)
    keep: list[Tensor]  # dropout masks: two discriminator chunks, or [generator, discriminator]


class _Schedule:
    """Per-unit epoch orders and per-step draws, from each unit's own generator in a fixed order."""

    def __init__(self, units: list[EnsembleUnit], cfg: CGANConfig, dtype: torch.dtype) -> None:
        self.units, self.cfg, self.dtype = units, cfg, dtype
        self.orders: list[Tensor | None] = [None] * len(units)

    def draw(self, step: int, active: list[int]) -> _Draws:
        cfg, b, h = self.cfg, self.cfg.batch_size, self.cfg.hidden
        parts: list[tuple[Tensor, Tensor, Tensor | None, list[Tensor]]] = []
        for u in active:
            unit, gen = self.units[u], self.units[u].generator
            k = steps_per_epoch(unit.n, cfg)
            if step % k == 0:  # a new epoch: every member visits its rows in its own random order
                self.orders[u] = torch.argsort(
                    torch.rand(unit.members, unit.n, generator=gen), dim=1
                )
            j = step % k
            index = self.orders[u][:, j * b : (j + 1) * b]
            z = torch.randn(unit.members, b, cfg.noise_dim, generator=gen, dtype=self.dtype)
            if step % 2 == 0:
                mix = torch.argsort(torch.rand(unit.members, 2 * b, generator=gen), dim=1)
                keep = [_keep((unit.members, b, h), cfg.dropout, gen, self.dtype) for _ in range(2)]
            else:
                mix = None
                keep = [_keep((unit.members, b, h), cfg.dropout, gen, self.dtype) for _ in range(2)]
            parts.append((index, z, mix, keep))
        index, z, mix, keep = zip(*parts, strict=True)
        return _Draws(
            torch.cat(index),
            torch.cat(z),
            torch.cat(mix) if step % 2 == 0 else None,
            [torch.cat([kp[i] for kp in keep]) for i in range(2)],
        )


def _gather(data: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` (M, B) of ``data`` (M, n, d) → (M, B, d)."""
    return torch.gather(data, 1, index.unsqueeze(-1).expand(-1, -1, data.shape[-1]))


def _bce(logits: Tensor, target: Tensor | float) -> Tensor:
    """Per-member mean BCE → (M,)."""
    target = torch.full_like(logits, target) if isinstance(target, float) else target
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)


def _adam(params: list[Tensor], cfg: CGANConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=False)


class _Stacked:
    """The active members as stacked parameters with one Adam per network, shrinkable."""

    def __init__(
        self, units: list[EnsembleUnit], cfg: CGANConfig, device: torch.device, dtype: torch.dtype
    ) -> None:
        gens, discs = [], []
        for unit in units:
            g, d = init_members(unit, cfg)
            gens += g
            discs += d
        self.cfg = cfg
        self.g, _ = stack_module_state([m.to(device, dtype) for m in gens])
        self.d, _ = stack_module_state([m.to(device, dtype) for m in discs])
        self.opt_g, self.opt_d = (
            _adam(list(self.g.values()), cfg),
            _adam(list(self.d.values()), cfg),
        )

    def discriminator_step(self, x: Tensor, y: Tensor, draws: _Draws) -> None:
        cfg, b = self.cfg, x.shape[1]
        with torch.no_grad():  # the generator in evaluation mode: no dropout
            fake = stacked_forward(self.g, torch.cat([x, draws.z], -1))
        pooled = torch.cat([torch.cat([x, fake], -1), torch.cat([x, y], -1)], 1)  # (M, 2B, dx+dy)
        labels = torch.cat(
            [
                torch.full_like(x[..., 0], cfg.fake_label),
                torch.full_like(x[..., 0], cfg.real_label),
            ],
            1,
        )
        for c, keep in enumerate(draws.keep):
            rows = draws.mix[:, c * b : (c + 1) * b]
            logits = stacked_forward(self.d, _gather(pooled, rows), keep).squeeze(-1)
            self.opt_d.zero_grad(set_to_none=True)
            _bce(logits, torch.gather(labels, 1, rows)).sum().backward()
            self.opt_d.step()

    def generator_step(self, x: Tensor, draws: _Draws) -> None:
        keep_g, keep_d = draws.keep
        fake = stacked_forward(self.g, torch.cat([x, draws.z], -1), keep_g)
        logits = stacked_forward(self.d, torch.cat([x, fake], -1), keep_d)
        self.opt_g.zero_grad(set_to_none=True)
        _bce(logits, self.cfg.real_label).sum().backward(inputs=list(self.g.values()))
        self.opt_g.step()

    def generator_params(self, rows: slice) -> dict[str, Tensor]:
        return {k: v.detach()[rows].clone() for k, v in self.g.items()}

    def keep_only(self, keep: Tensor) -> None:
        """Drop the members where ``keep`` is False, with their Adam moments
        (the step count is shared)."""
        self.g, self.opt_g = self._slice(self.g, self.opt_g, keep)
        self.d, self.opt_d = self._slice(self.d, self.opt_d, keep)

    def _slice(
        self, params: dict[str, Tensor], opt: torch.optim.Adam, keep: Tensor
    ) -> tuple[dict[str, Tensor], torch.optim.Adam]:
        state = opt.state_dict()
        for moments in state["state"].values():
            for name in ("exp_avg", "exp_avg_sq"):
                moments[name] = moments[name][keep]
        sliced = {k: v.detach()[keep].clone().requires_grad_() for k, v in params.items()}
        new = _adam(list(sliced.values()), self.cfg)
        new.load_state_dict(state)
        return sliced, new


@dataclass
class TrainedUnit:
    """A unit's trained generators (stacked over its members) and its samples ŷ = g_m(x_m, z)."""

    generator_params: dict[str, Tensor]
    samples: Tensor  # (m, n, target_dim)


def _finish(unit: EnsembleUnit, params: dict[str, Tensor], cfg: CGANConfig) -> TrainedUnit:
    """Samples with fresh noise for every condition, generator in evaluation mode (no dropout)."""
    with torch.no_grad():
        z = torch.randn(
            unit.members, unit.n, cfg.noise_dim, generator=unit.generator, dtype=unit.cond.dtype
        )
        return TrainedUnit(
            params, stacked_forward(params, torch.cat([unit.cond, z.to(unit.cond.device)], -1))
        )


def train_units(
    units: list[EnsembleUnit],
    cfg: CGANConfig,
    backend: Backend = "bmm",
    progress: bool = False,
    on_done: Callable[[int, TrainedUnit], None] | None = None,
) -> list[TrainedUnit]:
    """Train every unit's members as one stacked model (``bmm``) or member by member (``loop``).

    Units may differ in size: each trains for exactly ``epochs`` epochs of its own data and leaves
    the stacked model when done; ``on_done(i, result)`` is called as soon as unit ``i`` is finished
    (so a caller can save it before the others end). The ``loop`` backend is the reference the
    stacked one must reproduce (tests/test_causal.py) and the benchmark's baseline.
    """
    if not units:
        return []
    dtype, device = units[0].cond.dtype, units[0].cond.device
    total = [steps_per_run(u.n, cfg) for u in units]
    schedule = _Schedule(units, cfg, dtype)
    model = (
        _Stacked(units, cfg, device, dtype)
        if backend == "bmm"
        else _Looped(units, cfg, device, dtype)
    )
    # data of every member, padded to the longest unit (only valid rows are ever indexed)
    n_max = max(u.n for u in units)
    pad = lambda t: F.pad(t, (0, 0, 0, n_max - t.shape[1]))  # noqa: E731
    cond, target = (
        torch.cat([pad(u.cond) for u in units]),
        torch.cat([pad(u.target) for u in units]),
    )
    active = list(range(len(units)))
    results: list[TrainedUnit | None] = [None] * len(units)
    bar = tqdm(
        total=max(total),
        desc=f"CGAN ensembles ({sum(u.members for u in units)} members)",
        unit="step",
        disable=not progress,
        leave=False,
    )
    step = 0
    while active:
        draws = schedule.draw(step, active)
        index = draws.index.to(device)
        x, y = _gather(cond, index), _gather(target, index)
        draws = _Draws(
            index,
            draws.z.to(device),
            None if draws.mix is None else draws.mix.to(device),
            [k.to(device) for k in draws.keep],
        )
        if step % 2 == 0:
            model.discriminator_step(x, y, draws)
        else:
            model.generator_step(x, draws)
        step += 1
        bar.update()
        done = [u for u in active if total[u] == step]
        if done:
            sizes = [units[u].members for u in active]
            starts = [sum(sizes[:i]) for i in range(len(active))]
            keep = torch.ones(sum(sizes), dtype=torch.bool)
            for u in done:
                i = active.index(u)
                rows = slice(starts[i], starts[i] + sizes[i])
                results[u] = _finish(units[u], model.generator_params(rows), cfg)
                keep[rows] = False
                if on_done is not None:
                    on_done(u, results[u])
            rows_kept = keep.nonzero().squeeze(1)
            cond, target = cond[rows_kept], target[rows_kept]
            active = [u for u in active if u not in done]
            if active:
                model.keep_only(keep.to(device))
    bar.close()
    return results


class _Looped:
    """Reference backend: one ``MLP`` pair and two Adams per member, stepped one after the other."""

    def __init__(
        self, units: list[EnsembleUnit], cfg: CGANConfig, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.cfg, self.gens, self.discs = cfg, [], []
        for unit in units:
            g, d = init_members(unit, cfg)
            self.gens += [m.to(device, dtype) for m in g]
            self.discs += [m.to(device, dtype) for m in d]
        self.opts = [
            (_adam(list(g.parameters()), cfg), _adam(list(d.parameters()), cfg))
            for g, d in zip(self.gens, self.discs, strict=True)
        ]

    def discriminator_step(self, x: Tensor, y: Tensor, draws: _Draws) -> None:
        cfg, b = self.cfg, x.shape[1]
        for m, (g, d) in enumerate(zip(self.gens, self.discs, strict=True)):
            with torch.no_grad():
                fake = g(torch.cat([x[m], draws.z[m]], -1))
            pooled = torch.cat([torch.cat([x[m], fake], -1), torch.cat([x[m], y[m]], -1)])
            labels = torch.cat(
                [
                    torch.full((b,), cfg.fake_label, dtype=x.dtype),
                    torch.full((b,), cfg.real_label, dtype=x.dtype),
                ]
            )
            for c, keep in enumerate(draws.keep):
                rows = draws.mix[m, c * b : (c + 1) * b]
                self.opts[m][1].zero_grad(set_to_none=True)
                _bce(d(pooled[rows], keep[m]).T, labels[rows][None]).sum().backward()
                self.opts[m][1].step()

    def generator_step(self, x: Tensor, draws: _Draws) -> None:
        keep_g, keep_d = draws.keep
        for m, (g, d) in enumerate(zip(self.gens, self.discs, strict=True)):
            fake = g(torch.cat([x[m], draws.z[m]], -1), keep_g[m])
            self.opts[m][0].zero_grad(set_to_none=True)
            _bce(d(torch.cat([x[m], fake], -1), keep_d[m]).T, self.cfg.real_label).sum().backward(
                inputs=list(g.parameters())
            )
            self.opts[m][0].step()

    def generator_params(self, rows: slice) -> dict[str, Tensor]:
        params, _ = stack_module_state(self.gens[rows])
        return {k: v.detach().clone() for k, v in params.items()}

    def keep_only(self, keep: Tensor) -> None:
        idx = keep.nonzero().squeeze(1).tolist()
        self.gens, self.discs, self.opts = (
            [seq[i] for i in idx] for seq in (self.gens, self.discs, self.opts)
        )
