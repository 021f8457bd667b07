"""Schema of ``params.yaml``, the single source of experiment parameters.

Every field is required: a value lives in ``params.yaml`` or nowhere, so there is no
second, hidden default in code. Unknown keys are rejected so a typo cannot silently
fall back to something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PosInt = Annotated[int, Field(gt=0)]
PosFloat = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(gt=0, lt=1)]


class Section(BaseModel):
    """Strict base: unknown keys are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class C2STParams(Section):
    """Classifier two-sample tests shared by the calibration, GAN and causal stages (§5.3.2)."""

    test_fraction: Probability
    alpha: Probability
    nn_hidden: PosInt
    nn_epochs: PosInt
    nn_lr: PosFloat


class DistanceSearch(Section):
    """Grid over the rectangle model (θ, a, b); θ spans [0°, 90°) since (θ+90°, b, a) is the same set."""

    theta_steps: PosInt
    side_min: PosFloat
    side_max: PosFloat
    side_steps: PosInt

    @field_validator("side_max")
    @classmethod
    def _max_above_min(cls, v: float, info: Any) -> float:
        if "side_min" in info.data and v <= info.data["side_min"]:
            raise ValueError("must be larger than side_min")
        return v


class DistancesParams(Section):
    """Appendix D / §5.5.2: fitting a rotated uniform rectangle under KL, JS, EMD and ML."""

    n_points: PosInt
    parzen_radius: PosFloat
    grid_size: Annotated[int, Field(ge=9)]
    extent: PosFloat
    supersample: PosInt
    model_floor: Probability
    emd_grid_size: Annotated[int, Field(ge=4)]
    sinkhorn_reg: PosFloat
    sinkhorn_tol: PosFloat
    search: DistanceSearch


class TwoSampleParams(Section):
    """Calibration of the two-sample tests: type-I error under P=Q and power against a heavy-tailed Q."""

    dim: PosInt
    sample_sizes: Annotated[list[PosInt], Field(min_length=1)]
    repetitions: PosInt
    student_dof: PosFloat


class MiniDataParams(Section):
    """Offline mini data drawn from scikit-learn's digits, in the official formats (lib/minidata.py)."""

    pool_fractions: Annotated[list[Probability], Field(min_length=3, max_length=3)]
    source_train_per_class: PosInt
    source_val_per_class: PosInt
    source_size: Annotated[int, Field(ge=16)]
    voc_trainval: Annotated[int, Field(ge=2)]
    voc_test: PosInt
    voc_size_min: Annotated[int, Field(ge=32)]
    voc_size_max: Annotated[int, Field(ge=32)]
    max_objects: PosInt
    max_distractors: Annotated[int, Field(ge=0)]
    object_min: Annotated[int, Field(ge=6)]
    object_max_fraction: Probability
    max_overlap: Probability
    difficult_below: Annotated[int, Field(ge=0)]
    action_trainval: Annotated[int, Field(ge=2)]
    gan_images: PosInt
    gan_size: Annotated[int, Field(ge=8)]

    @field_validator("pool_fractions")
    @classmethod
    def _fractions_sum(cls, v: list[float]) -> list[float]:
        if abs(sum(v) - 1) > 1e-6:
            raise ValueError("source, target-trainval and target-test fractions must sum to 1")
        return v

    @field_validator("voc_size_max")
    @classmethod
    def _size_range(cls, v: int, info: Any) -> int:
        if "voc_size_min" in info.data and v < info.data["voc_size_min"]:
            raise ValueError("must be at least voc_size_min")
        return v


class FullDataParams(Section):
    """Official datasets: archives fetched with checksums (lib/download.py), ImageNet from a local path."""

    download_dir: str
    archives: list[str]
    imagenet_path: str
    imagenet_verify_md5: bool
    wordnet_fall11_path: str
    wordnet_is_a_path: str


class DataParams(Section):
    """Raw data under ``data/01_raw``: built offline (``mini``) or fetched (``full``)."""

    skip_corrupt: bool
    verify_fraction: Annotated[float, Field(gt=0, le=1)]
    mini: MiniDataParams
    full: FullDataParams


class Params(Section):
    """Root of ``params.yaml``."""

    profile: Literal["mini", "full"]
    seed: Annotated[int, Field(ge=0)]
    device: str
    c2st: C2STParams
    data: DataParams
    distances: DistancesParams
    twosample: TwoSampleParams

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in {"auto", "cpu", "cuda", "mps"} or v.startswith("cuda:"):
            return v
        raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")


class ParamsError(ValueError):
    """``params.yaml`` is missing, unreadable or invalid; the message names the key and the fix."""


def _describe(error: dict[str, Any], source: Path) -> str:
    key = ".".join(str(p) for p in error["loc"])
    kind = error["type"]
    if kind == "missing":
        return f"{source}: missing key '{key}': add it (every parameter is required, see README)."
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{key}': remove it or fix its spelling."
    return f"{source}: invalid value for '{key}' ({error.get('input')!r}): {error['msg']}."


def validate_params(raw: dict[str, Any], source: Path) -> Params:
    """Validate a parsed ``params.yaml``; raise :class:`ParamsError` naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def read_params_file(path: Path) -> dict[str, Any]:
    """Parse ``params.yaml`` with a clear message when it is absent or not a mapping."""
    if not path.is_file():
        raise ParamsError(f"{path}: not found. Run from the repository root, where params.yaml lives.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of parameter names to values.")
    return raw
