"""AlexNet-shaped networks (Appendix B.6.2) with the layer names the thesis uses: C1–C5, FC6–FC8.

One class serves both profiles: the full profile uses Krizhevsky's shapes (:func:`full_spec`),
the mini profile a scaled-down spec from ``params.yaml`` with the same layer names, so the
transfer (Ch. 3) and fully-convolutional (Ch. 4) code never depends on the scale.

Helpers cover what transfer needs: read FC7 features, drop FC8, freeze named layers, and build
the adaptation head FCa…FCb on top of FC7.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

CONV_LAYERS: tuple[str, ...] = ("c1", "c2", "c3", "c4", "c5")
FC_LAYERS: tuple[str, ...] = ("fc6", "fc7", "fc8")
LAYERS: tuple[str, ...] = CONV_LAYERS + FC_LAYERS


@dataclass(frozen=True)
class ConvSpec:
    """One convolutional block: conv → ReLU → optional LRN → optional 3×3/2 (or 2×2/2) max pool."""

    channels: int
    kernel: int
    stride: int
    padding: int
    lrn: bool
    pool: int  # max-pool kernel (stride 2); 0 means no pooling


@dataclass(frozen=True)
class AlexNetSpec:
    """Shapes of an AlexNet-like network; ``conv`` has exactly the five blocks C1–C5."""

    input_size: int
    conv: tuple[ConvSpec, ...]
    fc_dim: int
    dropout: float

    def __post_init__(self) -> None:
        if len(self.conv) != len(CONV_LAYERS):
            raise ValueError(
                f"an AlexNet spec needs {len(CONV_LAYERS)} conv blocks (C1–C5), got"
                f" {len(self.conv)}"
            )


def full_spec(fc_dim: int = 4096, dropout: float = 0.5) -> AlexNetSpec:
    """Krizhevsky et al.'s shapes on 224×224 inputs (FC6/FC7 of 4096, or
    6144 for the 1512-class net)."""
    return AlexNetSpec(
        input_size=224,
        conv=(
            ConvSpec(96, 11, 4, 2, lrn=True, pool=3),
            ConvSpec(256, 5, 1, 2, lrn=True, pool=3),
            ConvSpec(384, 3, 1, 1, lrn=False, pool=0),
            ConvSpec(384, 3, 1, 1, lrn=False, pool=0),
            ConvSpec(256, 3, 1, 1, lrn=False, pool=3),
        ),
        fc_dim=fc_dim,
        dropout=dropout,
    )


def spec_from_params(
    input_size: int, conv: Sequence[dict], fc_dim: int, dropout: float
) -> AlexNetSpec:
    """Build a spec from the ``net`` section of ``params.yaml`` (a list of five conv dicts)."""
    return AlexNetSpec(input_size, tuple(ConvSpec(**c) for c in conv), fc_dim, dropout)


def _conv_block(in_ch: int, spec: ConvSpec) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, spec.channels, spec.kernel, spec.stride, spec.padding),
        nn.ReLU(inplace=True),
    ]
    if spec.lrn:
        layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
    if spec.pool:
        layers.append(nn.MaxPool2d(spec.pool, stride=2))
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    """He initialisation: without batch norm, PyTorch's default scale lets the signal fade through
    seven layers and SGD at lr 0.01 never leaves chance level (Krizhevsky et al. needed biases of 1
    and long warm-up for the same reason)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        nn.init.zeros_(module.bias)


class AlexNet(nn.Module):
    """C1–C5 convolutional blocks, FC6/FC7 (ReLU + dropout) and the FC8 classifier.

    ``num_classes=0`` builds the network without FC8 (the transfer trunk).
    """

    def __init__(self, spec: AlexNetSpec, num_classes: int):
        super().__init__()
        self.spec = spec
        blocks, in_ch = OrderedDict(), 3
        for name, conv in zip(CONV_LAYERS, spec.conv, strict=True):
            blocks[name] = _conv_block(in_ch, conv)
            in_ch = conv.channels
        self.features = nn.Sequential(blocks)
        with torch.no_grad():
            out = self.features(torch.zeros(1, 3, spec.input_size, spec.input_size))
        if out.shape[-1] < 1:
            raise ValueError(f"input size {spec.input_size} is too small for the conv blocks")
        self.conv_shape = tuple(out.shape[1:])
        self.fc6 = nn.Sequential(
            nn.Flatten(),
            nn.Linear(out[0].numel(), spec.fc_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(spec.dropout),
        )
        self.fc7 = nn.Sequential(
            nn.Linear(spec.fc_dim, spec.fc_dim), nn.ReLU(inplace=True), nn.Dropout(spec.dropout)
        )
        self.fc8: nn.Module | None = nn.Linear(spec.fc_dim, num_classes) if num_classes else None
        self.apply(_init)

    def layer(self, name: str) -> nn.Module:
        """The module of a thesis layer name (c1…c5, fc6…fc8)."""
        if name in CONV_LAYERS:
            return getattr(self.features, name)
        if name in FC_LAYERS and getattr(self, name) is not None:
            return getattr(self, name)
        raise KeyError(
            f"no layer '{name}' (known:"
            f" {', '.join(n for n in LAYERS if n != 'fc8' or self.fc8 is not None)})"
        )

    def fc7_features(self, x: torch.Tensor) -> torch.Tensor:
        """Activations after FC7 (ReLU, and dropout in training mode): the
        transferred representation."""
        return self.fc7(self.fc6(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc7_features(x)
        if self.fc8 is None:
            return h
        return self.fc8(h)

    def drop_fc8(self) -> AlexNet:
        """Remove the source-task classifier in place (the forward pass then returns FC7)."""
        self.fc8 = None
        return self


def freeze(model: AlexNet, layers: Iterable[str]) -> None:
    """Stop gradients to the named layers and keep them in eval mode (no
    dropout in frozen FC layers).

    Eval mode is enforced by a forward pre-hook so a later ``model.train()`` cannot re-enable it.
    """
    for name in layers:
        module = model.layer(name)
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        if not getattr(module, "_frozen_hook", False):
            module.register_forward_pre_hook(_keep_eval)
            module._frozen_hook = True


def _keep_eval(module: nn.Module, args: tuple) -> None:
    if module.training:
        module.eval()


class TransferNet(nn.Module):
    """The Ch. 3 transfer network: the AlexNet trunk (C1–FC7) and adaptation layers FCa…FCb.

    ``hidden`` lists the widths of the hidden adaptation layers (ReLU + dropout); ``[2048]`` gives
    the thesis' FCa + FCb, ``[]`` a single softmax layer on FC7, ``[2048, 2048]`` three layers.
    """

    def __init__(self, trunk: AlexNet, hidden: Sequence[int], num_outputs: int, dropout: float):
        super().__init__()
        if trunk.fc8 is not None:
            raise ValueError(
                "drop FC8 from the pretrained network before transfer (AlexNet.drop_fc8)"
            )
        self.trunk = trunk
        layers: list[nn.Module] = []
        width = trunk.spec.fc_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*layers)
        self.head.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over the K+1 outputs (K classes and background); softmax is in the loss/scorer."""
        return self.head(self.trunk(x))


def _stages(model: TransferNet) -> list[tuple[str, nn.Module]]:
    trunk = model.trunk
    return [(n, trunk.layer(n)) for n in CONV_LAYERS] + [
        ("fc6", trunk.fc6),
        ("fc7", trunk.fc7),
        ("head", model.head),
    ]


def split_at(model: TransferNet, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The first ``cut`` stages of C1…C5, FC6, FC7 and the rest (… FC7,
    head); modules are shared."""
    stages = _stages(model)
    if not 0 <= cut < len(stages):
        raise ValueError(f"cut must be in 0..{len(stages) - 1}, got {cut}")
    return nn.Sequential(OrderedDict(stages[:cut])), nn.Sequential(OrderedDict(stages[cut:]))


def frozen_depth(frozen: Iterable[str]) -> int:
    """How many leading layers of C1…FC7 the ``frozen`` names cover without a gap."""
    names, depth = set(frozen), 0
    while depth < len(LAYERS) - 1 and LAYERS[depth] in names:
        depth += 1
    return depth


def frozen_prefix(model: TransferNet) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a transfer network at its first trainable layer: (frozen prefix, trainable rest).

    The prefix is deterministic (frozen layers run in eval mode), so its outputs on the training
    patches can be computed once and the rest trained on them: the same optimisation, several
    times cheaper when C1–FC7 are frozen. ``rest`` shares its modules with ``model``.
    """
    stages = _stages(model)[:-1]
    cut = 0
    while cut < len(stages) and not any(p.requires_grad for p in stages[cut][1].parameters()):
        cut += 1
    return split_at(model, cut)


def transfer_network(
    source: dict[str, Any] | None,
    scratch_spec: AlexNetSpec | None,
    frozen: Iterable[str],
    hidden: Sequence[int],
    num_outputs: int,
    seed: int,
) -> TransferNet:
    """A Ch. 3 transfer network: C1–FC7 copied from a pretrained ``source`` bundle (FC8 dropped), or
    built from ``scratch_spec`` with a seeded random init (NO PRETRAIN); ``frozen`` layers fixed."""
    torch.manual_seed(seed)
    if source is None:
        if scratch_spec is None:
            raise ValueError("NO PRETRAIN needs the network's shapes (scratch_spec)")
        trunk = AlexNet(scratch_spec, 0)
    else:
        trunk = from_bundle(source)
        if not isinstance(trunk, AlexNet):
            raise TypeError(
                "the source bundle must be a pretrained AlexNet, not a transfer network"
            )
        trunk.drop_fc8()
    freeze(trunk, frozen)
    return TransferNet(trunk, hidden, num_outputs, trunk.spec.dropout)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def to_bundle(
    model: AlexNet | TransferNet,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """A picklable, self-describing snapshot (shapes, weights, class names, input normalisation).

    Later stages rebuild the network from the bundle alone, so they never depend on the
    parameters the network was trained with.
    """
    trunk = model.trunk if isinstance(model, TransferNet) else model
    bundle: dict[str, Any] = {
        "spec": asdict(trunk.spec),
        "num_classes": trunk.fc8.out_features if trunk.fc8 is not None else 0,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "mean": list(mean),
        "std": list(std),
    }
    if isinstance(model, TransferNet):
        linears = [m for m in model.head if isinstance(m, nn.Linear)]
        dropouts = [m.p for m in model.head if isinstance(m, nn.Dropout)]
        bundle["head"] = {
            "hidden": [m.out_features for m in linears[:-1]],
            "outputs": linears[-1].out_features,
            "dropout": dropouts[0] if dropouts else 0.0,
        }
    return bundle


def _spec_from_dict(d: dict[str, Any]) -> AlexNetSpec:
    return AlexNetSpec(
        d["input_size"], tuple(ConvSpec(**c) for c in d["conv"]), d["fc_dim"], d["dropout"]
    )


def from_bundle(bundle: dict[str, Any]) -> AlexNet | TransferNet:
    """Rebuild the network saved by :func:`to_bundle` (an AlexNet, or a
    TransferNet with its head)."""
    trunk = AlexNet(_spec_from_dict(bundle["spec"]), bundle["num_classes"])
    model: AlexNet | TransferNet = trunk
    if "head" in bundle:
        head = bundle["head"]
        model = TransferNet(trunk, head["hidden"], head["outputs"], head["dropout"])
    model.load_state_dict(bundle["state_dict"])
    return model
