"""Conditional GAN networks of §5.4.2: generator g(x, z) → y and discriminator d(x, y).

Both are one-hidden-layer ReLU MLPs with dropout on the hidden layer. Dropout takes an explicit
keep-mask (already scaled by 1/(1-p)) instead of drawing it inside, so an ensemble trained as one
vectorised model and the same ensemble trained member by member see identical randomness.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """``in → hidden (ReLU, dropout) → out``; the discriminator's output is a logit."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, inputs: Tensor, keep: Tensor | None = None) -> Tensor:
        h = torch.relu(self.fc1(inputs))
        return self.fc2(h if keep is None else h * keep)


def generator(cond_dim: int, noise_dim: int, hidden: int, target_dim: int) -> MLP:
    """g(x, z): the input is the concatenation [x, z]."""
    return MLP(cond_dim + noise_dim, hidden, target_dim)


def discriminator(cond_dim: int, target_dim: int, hidden: int) -> MLP:
    """d(x, y): the input is the concatenation [x, y]; returns the logit of "real"."""
    return MLP(cond_dim + target_dim, hidden, 1)


def stacked_forward(
    params: dict[str, Tensor], inputs: Tensor, keep: Tensor | None = None
) -> Tensor:
    """:class:`MLP` for M stacked members at once with batched matmuls.

    ``params`` are the member parameters stacked on a leading axis
    (``torch.func.stack_module_state``), ``inputs`` is (M, B, in) and ``keep`` (M, B, hidden).
    """
    h = torch.relu(
        torch.baddbmm(params["fc1.bias"].unsqueeze(1), inputs, params["fc1.weight"].transpose(1, 2))
    )
    if keep is not None:
        h = h * keep
    return torch.baddbmm(params["fc2.bias"].unsqueeze(1), h, params["fc2.weight"].transpose(1, 2))
