"""DCGAN (Radford et al., 2016; thesis Appendix C): the generator/discriminator pair of §5.3.3.

The thesis uses 64×64 images: the generator maps 100-d noise through transposed 4×4 convolutions
with 8gf → 4gf → 2gf → gf → 3 channels (batch norm, ReLU, tanh out); the discriminator mirrors it
with df → 2df → 4df → 8df → 1 channels (LeakyReLU, batch norm, sigmoid). The number of doubling
blocks follows the image side (``log2(side) − 2``), so the mini profile's 32×32 images use the
same code with one block fewer (4gf → 2gf → gf → 3).

``models=M`` builds M independent networks of the same shape as one module: every convolution
has ``groups=M`` and batch norm is per channel, so model m owns the m-th block of channels and
never sees another's. A grid of small DCGANs then trains with one call per layer instead of M
(benchmarks/bench_gan.py measures the gain); :func:`stack_states` and :func:`split_state` convert
to and from the one-model weights, whose keys and shapes are those of ``models=1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

NOISE_DIM = 100


def _blocks(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if image_size < 8 or 2 ** (n + 2) != image_size:
        raise ValueError(f"DCGAN image size must be a power of two ≥ 8, got {image_size}")
    return n


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), zero biases."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Noise ``(N, models·100)`` → images ``(N, models·3, S, S)`` in [-1, 1]
    (model m: channels 3m…3m+2)."""

    def __init__(self, gf: int, image_size: int, noise_dim: int = NOISE_DIM, models: int = 1):
        super().__init__()
        n, m = _blocks(image_size), models
        widths = [gf * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 8gf, 4gf, 2gf, gf for 64×64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(
                m * noise_dim, m * widths[0], 4, 1, 0, bias=False, groups=m
            ),  # 1×1 → 4×4
            nn.BatchNorm2d(m * widths[0]),
            nn.ReLU(True),
        ]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [
                nn.ConvTranspose2d(m * a, m * b, 4, 2, 1, bias=False, groups=m),
                nn.BatchNorm2d(m * b),
                nn.ReLU(True),
            ]
        layers += [
            nn.ConvTranspose2d(m * widths[-1], m * 3, 4, 2, 1, bias=False, groups=m),
            nn.Tanh(),
        ]
        self.net = nn.Sequential(*layers)
        self.noise_dim, self.models = noise_dim, models
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.models * self.noise_dim, 1, 1))


class Discriminator(nn.Module):
    """Images ``(N, models·3, S, S)`` → logits ``(N,)`` for one model, ``(N, models)`` for several.

    The sigmoid lives in the loss, for stability.
    """

    def __init__(self, df: int, image_size: int, models: int = 1):
        super().__init__()
        n, m = _blocks(image_size), models
        widths = [df * 2**i for i in range(n)]  # df, 2df, 4df, 8df for 64×64
        layers: list[nn.Module] = [
            nn.Conv2d(m * 3, m * widths[0], 4, 2, 1, bias=False, groups=m),
            nn.LeakyReLU(0.2, True),
        ]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [
                nn.Conv2d(m * a, m * b, 4, 2, 1, bias=False, groups=m),
                nn.BatchNorm2d(m * b),
                nn.LeakyReLU(0.2, True),
            ]
        layers += [
            nn.Conv2d(m * widths[-1], m, 4, 1, 0, bias=False, groups=m),
            nn.Flatten(1),
        ]  # 4×4 → 1 per model
        self.net = nn.Sequential(*layers)
        self.models = models
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, 0] if self.models == 1 else out


def stack_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Weights of M one-model networks of one shape → the weights of their ``models=M`` module."""
    return {
        k: torch.cat([s[k] for s in states]) if states[0][k].dim() else states[0][k].clone()
        for k in states[0]
    }


def split_state(state: dict[str, torch.Tensor], models: int) -> list[dict[str, torch.Tensor]]:
    """Inverse of :func:`stack_states`: the one-model weights of each of the ``models`` networks."""
    parts = {k: v.chunk(models) if v.dim() else [v] * models for k, v in state.items()}
    return [{k: parts[k][i].clone() for k in state} for i in range(models)]
