"""Featurisers for two-sample tests on images (§5.3.3): images in [-1, 1] → feature vectors.

The thesis compares GAN samples and real images in the feature space of an ImageNet-pretrained
ResNet-34 (full profile). The mini profile has no such network offline, so it uses the network it
pretrained itself in Chapter 3 (the ``pretrain`` stage's AlexNet bundle, FC7 features), as the
issue asks. :func:`build_featuriser` picks one by ``kind`` (see :data:`FEATURISERS`).

Weights are read from a local file, never downloaded at run time; for ResNet-34 (fetched by the
``data`` stage) the file's SHA-256 must start with the prefix torchvision publishes in the file
name (``resnet34-b627a593.pth``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import resnet34

from oquab_repro.lib.bundles import read_bundle
from oquab_repro.lib.models.alexnet import AlexNet, from_bundle

log = logging.getLogger(__name__)

Featuriser = Callable[[torch.Tensor], np.ndarray]
"""Maps N×3×S×S images in [-1, 1] to an N×D float array."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_sha256_prefix(path: Path, prefix: str) -> None:
    """Raise naming the file when its SHA-256 does not start with ``prefix``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(prefix):
        raise ValueError(
            f"{path}: SHA-256 {digest.hexdigest()[:12]}… does not start with {prefix}; re-fetch it"
            " with `dvc repro data`."
        )


def resnet34_featuriser(
    weights: Path | None, sha256_prefix: str | None, input_size: int, seed: int, batch: int = 250
) -> Featuriser:
    """ResNet-34 penultimate features (512-d, after global pooling) of images
    resized to ``input_size``.

    ``weights=None`` gives a seeded random initialisation (random convolutional features), which
    the tests use where no pretrained network is at hand.
    """
    torch.manual_seed(seed)
    net = resnet34()
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights}: ResNet-34 weights not found; fetch them with `dvc repro data` (profile"
                " full)."
            )
        if sha256_prefix:
            check_sha256_prefix(weights, sha256_prefix)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return _batched_features(net, input_size, mean, std, batch)


def _batched_features(
    net: torch.nn.Module, input_size: int, mean: torch.Tensor, std: torch.Tensor, batch: int
) -> Featuriser:
    """Images in [-1, 1] → [0, 1] → resized to ``input_size``
    (antialiased) → normalised → ``net``."""

    @torch.no_grad()
    def featurise(images: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            x = (images[i : i + batch] + 1) / 2
            if x.shape[-1] != input_size:
                x = F.interpolate(
                    x, size=input_size, mode="bilinear", antialias=True, align_corners=False
                )
            out.append(net((x - mean) / std))
        return torch.cat(out).numpy()

    return featurise


def alexnet_bundle_featuriser(
    weights: Path | None, sha256_prefix: str | None, input_size: int, seed: int, batch: int = 500
) -> Featuriser:
    """FC7 features (after ReLU, eval mode: no dropout) of a Ch. 3 AlexNet
    bundle (``pretrain`` stage).

    Images are resized to the network's own input size and normalised with the bundle's mean and
    std, as in pretraining. ``input_size`` must equal the bundle's
    (params.yaml says what it expects).
    """
    if weights is None or not Path(weights).is_file():
        raise FileNotFoundError(
            f"{weights}: pretrained AlexNet bundle not found; build it with `dvc repro pretrain`"
            " (gan featuriser kind alexnet_bundle)."
        )
    if sha256_prefix:
        check_sha256_prefix(Path(weights), sha256_prefix)
    try:
        bundle = read_bundle(Path(weights))
        net = from_bundle(bundle)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{weights}: not a readable AlexNet bundle ({err}); rebuild it with `dvc repro"
            " pretrain`."
        ) from err
    if not isinstance(net, AlexNet):
        raise ValueError(
            f"{weights}: holds a transfer network, not a pretrained AlexNet; point gan "
            "featuriser weights at a pretrain stage's weights.safetensors."
        )
    if net.spec.input_size != input_size:
        raise ValueError(
            f"{weights}: the network takes {net.spec.input_size}×{net.spec.input_size} inputs but"
            f" params.yaml gan featuriser input_size is {input_size}; set it to"
            f" {net.spec.input_size}."
        )
    net.drop_fc8().eval()
    mean = torch.tensor(bundle["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(bundle["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return _batched_features(net, input_size, mean, std, batch)


FEATURISERS: dict[str, Callable[..., Featuriser]] = {
    "resnet34": resnet34_featuriser,
    "alexnet_bundle": alexnet_bundle_featuriser,
}


def build_featuriser(kind: str, **kwargs) -> Featuriser:
    """The featuriser registered under ``kind`` (see :data:`FEATURISERS`)."""
    if kind not in FEATURISERS:
        raise ValueError(
            f"params.yaml: unknown gan featuriser '{kind}'; expected one of {sorted(FEATURISERS)}"
        )
    return FEATURISERS[kind](**kwargs)


def knn_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> float:
    """Coverage (Naeem et al., 2020): share of real points whose k-NN ball holds a generated point.

    A k-NN ball is centred on a real point with the radius of its k-th nearest real neighbour.
    A collapsed generator covers few balls whatever the quality of its few modes, so this score
    penalises the failure the thesis' two-sample tests are meant to catch, without a classifier.
    """
    r, f = (
        torch.as_tensor(real, dtype=torch.float32).flatten(1),
        torch.as_tensor(fake, dtype=torch.float32).flatten(1),
    )
    if len(r) <= k:
        raise ValueError(f"knn_coverage needs more than k={k} real points, got {len(r)}")
    radii = (
        torch.cdist(r, r).kthvalue(k + 1, dim=1).values
    )  # k + 1: the nearest is the point itself
    nearest_fake = torch.cdist(r, f).min(dim=1).values
    return float((nearest_fake < radii).float().mean())
