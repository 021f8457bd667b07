"""Schema of ``params.yaml``, the single source of experiment parameters.

Every field is required: a value lives in ``params.yaml`` or nowhere, so there is no
second, hidden default in code. Unknown keys are rejected so a typo cannot silently
fall back to something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

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


class TuebingenParams(Section):
    """The real Tübingen cause-effect pairs (§5.4.2), converted from ``cdt`` to the official format."""

    effect_first_fraction: Annotated[float, Field(ge=0, le=1)]


class CGANParams(Section):
    """Conditional GAN of §5.4.2 shared by both profiles: optimiser, noise, dropout, label smoothing."""

    noise_dim: PosInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    lr: PosFloat
    beta1: Annotated[float, Field(ge=0, lt=1)]
    beta2: Annotated[float, Field(ge=0, lt=1)]
    real_label: Probability
    fake_label: Annotated[float, Field(ge=0, lt=1)]


class CausalScale(Section):
    """Profile-dependent size of the causal experiment."""

    max_points: Annotated[int, Field(ge=20)]
    ensemble_size: PosInt
    hidden: PosInt
    epochs: PosInt
    batch_size: PosInt
    anm_fit_points: Annotated[int, Field(ge=20)]
    workers: PosInt  # processes training the size groups of pairs at once (CPU; one with a GPU)


Baseline = Literal["anm", "igci", "reci", "cds"]


class CausalParams(Section):
    """§5.4.2 / Table 5.1: CGAN-C2ST cause-effect discovery on the Tübingen pairs, and cdt baselines."""

    cgan: CGANParams
    baselines: list[Baseline]
    figure_pairs: Annotated[list[PosInt], Field(min_length=1)]
    mini: CausalScale
    full: CausalScale
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
    workers: PosInt

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


GAN_DATASETS: tuple[str, ...] = ("lfw", "lsun_bedroom")
"""The DCGAN grid's image sets (folders under data/01_raw/gan); dvc.yaml's gan matrix lists them."""
GAN_LEVELS: tuple[str, ...] = ("small", "medium", "large")
"""Width levels of the gf × df grid; each profile maps them to channel counts (gan.<profile>.widths)."""


class GanOptim(Section):
    """Appendix C: Adam with the DCGAN settings."""

    lr: PosFloat
    beta1: Probability


class GanFeaturiser(Section):
    """Network mapping images to the features the two-sample tests compare (§5.3.3)."""

    kind: Literal["resnet34", "alexnet_bundle"]  # torchvision ResNet-34, or a Ch. 3 pretrain stage's AlexNet (FC7)
    weights: str | None  # resnet34: file under data/01_raw/weights or null (seeded random init); alexnet_bundle: its weights.pkl
    sha256_prefix: str | None
    input_size: PosInt


class GanPixelC2ST(Section):
    """C2ST on raw pixels with a discriminator-shaped CNN (the thesis found accuracy ≈ 1.0)."""

    df: PosInt
    epochs: PosInt
    lr: PosFloat
    batch_size: PosInt


class GanProfileParams(Section):
    """Scale of the DCGAN grid and of its evaluation for one profile."""

    image_size: Annotated[int, Field(ge=8)]
    widths: dict[Literal["small", "medium", "large"], PosInt]
    snapshot_epochs: Annotated[list[PosInt], Field(min_length=1)]
    train_images: PosInt | None
    preload: bool
    batch_size: Annotated[int, Field(ge=2)]
    num_workers: Annotated[int, Field(ge=0)]
    torch_threads: Annotated[int, Field(ge=0)]
    eval_samples: Annotated[int, Field(ge=8)]
    grid_images: PosInt
    coverage_k: PosInt
    featuriser: GanFeaturiser
    pixel_c2st: GanPixelC2ST

    @field_validator("widths")
    @classmethod
    def _every_level(cls, v: dict[str, int]) -> dict[str, int]:
        if set(v) != set(GAN_LEVELS):
            raise ValueError(f"must map every level {GAN_LEVELS} to a channel count")
        return v

    @field_validator("snapshot_epochs")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if sorted(set(v)) != v:
            raise ValueError("must be strictly increasing")
        return v


class GanParams(Section):
    """§5.3.3 / Appendix C: DCGAN grid over dataset × gf × df, evaluated by two-sample tests."""

    optim: GanOptim
    mini: GanProfileParams
    full: GanProfileParams

# ---------------------------------------------------------------------------------------------
# Chapter 3: patches, pretraining, transfer
# ---------------------------------------------------------------------------------------------

# pretrain stage names → the data stage's class sets (data/02_intermediate/data/class_sets.json)
SOURCE_CLASS_SETS: dict[str, str] = {"in1000c": "1000C", "in1000r": "1000R", "in1512": "1512"}
PRETRAIN_SOURCES: tuple[str, ...] = tuple(SOURCE_CLASS_SETS)
# transfer variant → the pretrained network it starts from (fixed: it shapes the pipeline and DVC deps)
TRANSFER_SOURCES: dict[str, str] = {
    "pre_in1000c": "in1000c",
    "pre_in1000r": "in1000r",
    "pre_in1512": "in1512",
    "pre_in1512u": "in1512",
    "pre_in1512_a1": "in1512",
    "pre_in1512_a3": "in1512",
}
TRANSFER_VARIANTS: tuple[str, ...] = tuple(TRANSFER_SOURCES)
TRANSFERABLE_LAYERS = Literal["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"]
NonNegInt = Annotated[int, Field(ge=0)]


class PatchesParams(Section):
    """§3.2.2: multi-scale square patches and the rule that labels them from the object boxes."""

    voc_year: str
    splits: Annotated[list[str], Field(min_length=1)]
    scales: Annotated[list[Annotated[float, Field(ge=1)]], Field(min_length=1)]
    step_fraction: Annotated[float, Field(gt=0, le=0.5)]
    min_patch_fraction: Probability
    min_object_fraction: Probability
    background_fraction: Annotated[float, Field(ge=0, le=1)]


class ConvBlockParams(Section):
    """One of C1–C5: conv (channels, kernel, stride, padding) → ReLU → LRN? → max pool (0 = none)."""

    channels: PosInt
    kernel: PosInt
    stride: PosInt
    padding: NonNegInt
    lrn: bool
    pool: NonNegInt


class NetParams(Section):
    """AlexNet-shaped network (App. B.6.2); ``mean``/``std`` normalise [0, 1] RGB inputs."""

    input_size: Annotated[int, Field(ge=8)]
    conv: Annotated[list[ConvBlockParams], Field(min_length=5, max_length=5)]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    mean: Annotated[list[float], Field(min_length=3, max_length=3)]
    std: Annotated[list[PosFloat], Field(min_length=3, max_length=3)]


class OptimParams(Section):
    """SGD with the thesis schedule: lr divided by ``lr_factor`` on plateaus of the ``plateau_on`` loss
    (``train``: the epoch's training cross-entropy, as §3.3 states; ``val``: the held-out loss),
    ``max_reductions`` times."""

    lr: PosFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    lr_factor: Probability
    patience: NonNegInt
    max_reductions: NonNegInt
    plateau_on: Literal["train", "val"]


class PretrainProfile(Section):
    """Profile-specific pretraining settings."""

    net: NetParams
    fc_dim: dict[str, PosInt]  # FC6/FC7 width per source set (the thesis widens them for 1512 classes)
    max_epochs: PosInt
    batch_size: PosInt
    num_workers: NonNegInt
    crop_scale_min: Probability  # jitter: random-resized crop keeps at least this share of the area
    flip: bool
    cache_images: bool  # decode the source images once and keep them in memory (mini-sized sets only)
    torch_threads: NonNegInt  # intra-op threads (0 = torch's default); 1 avoids spin-waiting on a shared CPU

    @field_validator("fc_dim")
    @classmethod
    def _all_sources(cls, v: dict[str, Any]) -> dict[str, Any]:
        if set(v) != set(PRETRAIN_SOURCES):
            raise ValueError(f"must give a width for exactly the source sets {list(PRETRAIN_SOURCES)}, got {sorted(v)}")
        return v


class PretrainParams(Section):
    """§3.2.1: AlexNet pretraining on the source sets 1000C, 1000R and 1512 (mini equivalents)."""

    optim: OptimParams
    mini: PretrainProfile
    full: PretrainProfile


class TransferVariant(Section):
    """One Table 3.1/3.2 row: which layers stay frozen, how many adaptation layers (source: TRANSFER_SOURCES)."""

    frozen: list[TRANSFERABLE_LAYERS]
    adaptation_layers: Annotated[int, Field(ge=1, le=3)]


class NoPretrainVariant(Section):
    """NO PRETRAIN: the same network randomly initialised and trained on the target patches only."""

    fc_dim: PosInt
    frozen: list[TRANSFERABLE_LAYERS]
    adaptation_layers: Annotated[int, Field(ge=1, le=3)]


class TransferProfile(Section):
    """Profile-specific transfer settings."""

    hidden_dim: PosInt  # width of each hidden adaptation layer (FCa: 2048 in the thesis)
    max_epochs: PosInt
    batch_size: PosInt
    num_workers: NonNegInt
    flip: bool
    cache_crops: bool  # without jitter, crop every training patch once and keep the crops in memory (mini-sized sets only)
    torch_threads: NonNegInt  # intra-op threads (0 = torch's default)
    heatmap_images: PosInt  # test images drawn as Fig. 3-1/3-9 heat maps
    heatmap_classes: PosInt  # highest-scoring classes shown per image


class TransferParams(Section):
    """§3.2.3–3.3: transfer to Pascal VOC, image scores from patch scores, per-class AP."""

    k: PosFloat  # image score = mean over patches of y^k
    train_set: str
    val_set: str
    test_set: str
    optim: OptimParams
    nopre: NoPretrainVariant
    variants: dict[str, TransferVariant]
    mini: TransferProfile
    full: TransferProfile

    @field_validator("variants")
    @classmethod
    def _all_variants(cls, v: dict[str, Any]) -> dict[str, Any]:
        if set(v) != set(TRANSFER_VARIANTS):
            raise ValueError(f"must define exactly the variants {list(TRANSFER_VARIANTS)}, got {sorted(v)}")
        return v


# ---------------------------------------------------------------------------------------------
# Chapter 4: weak supervision with global max pooling
# ---------------------------------------------------------------------------------------------

WEAK_DATASETS: tuple[str, ...] = ("voc", "coco")
"""Stages weak@<dataset> (dvc.yaml's foreach); each profile says where each set is."""
WEAK_SOURCE = "in1000c"
"""The pretrained network (stage pretrain@<source>) recast by Ch. 4 (fixed: it shapes the DVC deps)."""


class WeakVocSet(Section):
    """A Pascal VOC detection set under data/01_raw/voc (train on one image set, test on another)."""

    format: Literal["voc"]
    year: str
    train_set: str
    test_set: str


class WeakCocoSet(Section):
    """A COCO instances set under data/01_raw/coco (``<split>/`` images, ``annotations/instances_<split>.json``)."""

    format: Literal["coco"]
    train_set: str
    test_set: str


class WeakProfile(Section):
    """Profile-specific scale of the Ch. 4 experiments."""

    optim: OptimParams
    datasets: dict[str, WeakVocSet | WeakCocoSet]
    image_size: Annotated[int, Field(ge=16)]  # S: largest side after rescaling, zero-padded to S×S (thesis: 500)
    hidden_dim: PosInt  # Ca width (thesis: 2048)
    dropout: Annotated[float, Field(ge=0, lt=1)]  # SpatialDropout in Ca
    frozen: list[TRANSFERABLE_LAYERS]  # pretrained layers kept fixed
    max_epochs: PosInt
    batch_size: PosInt
    location_tolerance: Annotated[float, Field(ge=0)]  # px in the original image (thesis: 18 px)
    figure_images: PosInt
    torch_threads: NonNegInt

    @field_validator("datasets")
    @classmethod
    def _every_dataset(cls, v: dict[str, Any]) -> dict[str, Any]:
        if set(v) != set(WEAK_DATASETS) or v["voc"].format != "voc" or v["coco"].format != "coco":
            raise ValueError(f"must define exactly {list(WEAK_DATASETS)} (voc: format voc, coco: format coco), got {sorted(v)}")
        return v


class WeakParams(Section):
    """§4.2–4.6: fully-convolutional net on the pretrained Ch. 3 network, trained from image labels."""

    val_fraction: Probability  # seeded share of the training images held out (validation; the lr follows optim.plateau_on)
    train_scales: Annotated[list[PosFloat], Field(min_length=2, max_length=2)]  # each batch rescaled by s ~ U[lo, hi]
    test_scales: Annotated[list[PosFloat], Field(min_length=1)]
    mini: WeakProfile
    full: WeakProfile

    @field_validator("train_scales")
    @classmethod
    def _range(cls, v: list[float]) -> list[float]:
        if v[0] > v[1]:
            raise ValueError("must be [low, high] with low ≤ high")
        return v


# Table 3.3 rows: the action stage trains these transfer networks (settings from the transfer section)
ACTION_VARIANTS: tuple[str, ...] = ("nopre", "pre_in1512", "pre_in1512u")


class ActionsProfile(Section):
    """Profile-specific action-classification settings."""

    max_epochs: PosInt
    batch_size: PosInt
    figure_persons: PosInt  # person crops drawn with their true and predicted actions


class ActionsParams(Section):
    """Table 3.3: one square, mirror-padded patch per person, 10 actions, adaptation layers trained."""

    train_set: str
    test_set: str
    holdout_fraction: Probability  # share of train_set images kept aside (validation; the lr follows transfer.optim.plateau_on)
    side_factor: Annotated[float, Field(ge=1)]  # square side = side_factor × the box's longer side
    mini: ActionsProfile
    full: ActionsProfile

    @field_validator("test_set")
    @classmethod
    def _disjoint(cls, v: str, info: ValidationInfo) -> str:
        if v == info.data.get("train_set") or {v, info.data.get("train_set")} & {"trainval"}:
            raise ValueError("must be a VOC action split disjoint from actions.train_set (e.g. train → val)")
        return v


class DistributedParams(Section):
    """How many processes a training stage runs as (torch.distributed; README "Scaling out").

    An execution setting like the device: no DVC stage tracks it, so machines with different
    numbers of GPUs share one run-cache. Results are statistically the same for any count
    (DDP keeps the global batch; grid and ensemble units are seeded per unit, not per rank).
    """

    nproc_per_node: Literal["auto"] | PosInt  # auto: one per GPU with CUDA, else one per CPU core


class Params(Section):
    """Root of ``params.yaml``."""

    profile: Literal["mini", "full"]
    seed: Annotated[int, Field(ge=0)]
    device: str
    distributed: DistributedParams
    c2st: C2STParams
    data: DataParams
    distances: DistancesParams
    gan: GanParams
    twosample: TwoSampleParams
    tuebingen: TuebingenParams
    causal: CausalParams
    patches: PatchesParams
    pretrain: PretrainParams
    transfer: TransferParams
    weak: WeakParams
    actions: ActionsParams

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
