"""Schema of ``params.yaml``, the single source of experiment parameters.

Every field is required: a value lives in ``params.yaml`` or nowhere, so there is no
second, hidden default in code. Unknown keys are rejected so a typo cannot silently
fall back to something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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
    """Grid over the rectangle model (θ, a, b); θ spans [0°, 90°) since
    (θ+90°, b, a) is the same set."""

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


class TransportSearch(Section):
    """EMD / Sinkhorn on the full grid for a shortlist: every rectangle is solved on the first
    coarse grid, and the ``keep[i]`` best of each grid go on to the next (the last: ``grid_size``).
    """

    coarse_grids: Annotated[list[Annotated[int, Field(ge=4)]], Field(min_length=1)]
    keep: Annotated[list[PosInt], Field(min_length=1)]

    @field_validator("coarse_grids")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("must increase (coarsest first)")
        return v

    @field_validator("keep")
    @classmethod
    def _one_per_refinement(cls, v: list[int], info: ValidationInfo) -> list[int]:
        grids = info.data.get("coarse_grids")
        if grids is not None and len(v) != len(grids):
            raise ValueError(
                f"needs one count per coarse grid ({len(grids)}): how many go on to the next grid"
            )
        return v


DistanceCriterion = Literal["kl", "js", "emd", "sinkhorn", "nll"]


class DistancesParams(Section):
    """Appendix D / §5.5.2: fitting a rotated uniform rectangle under KL, JS, EMD and ML."""

    n_points: PosInt
    parzen_radius: PosFloat
    grid_size: Annotated[int, Field(ge=9)]
    extent: PosFloat
    supersample: PosInt
    model_floor: Probability
    rotate: Literal["model", "data"]
    criteria: Annotated[list[DistanceCriterion], Field(min_length=1)]
    transport: TransportSearch
    sinkhorn_reg: PosFloat
    sinkhorn_tol: PosFloat
    search: DistanceSearch

    @field_validator("criteria")
    @classmethod
    def _has_emd_once(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a criterion twice")
        if "emd" not in v:
            raise ValueError(
                "must include emd (the transport figure and the thesis' finding are about it)"
            )
        return v

    @field_validator("transport")
    @classmethod
    def _grids_tile_the_grid(cls, v: TransportSearch, info: ValidationInfo) -> TransportSearch:
        size = info.data.get("grid_size")
        if size is not None and any(g >= size or size % g for g in v.coarse_grids):
            raise ValueError(f"coarse_grids must be smaller than grid_size ({size}) and divide it")
        return v


class TwoSampleParams(Section):
    """Calibration of the two-sample tests: type-I error under P=Q and power
    against a heavy-tailed Q."""

    dim: PosInt
    sample_sizes: Annotated[list[PosInt], Field(min_length=1)]
    repetitions: PosInt
    student_dof: PosFloat


class CGANParams(Section):
    """Conditional GAN of §5.4.2 shared by both profiles: optimiser, noise,
    dropout, label smoothing."""

    noise_dim: PosInt
    dropout: Annotated[float, Field(ge=0, lt=1)]
    lr: PosFloat
    beta1: Annotated[float, Field(ge=0, lt=1)]
    beta2: Annotated[float, Field(ge=0, lt=1)]
    real_label: Probability
    fake_label: Annotated[float, Field(ge=0, lt=1)]

    @field_validator("fake_label")
    @classmethod
    def _below_real(cls, v: float, info: ValidationInfo) -> float:
        if "real_label" in info.data and v >= info.data["real_label"]:
            raise ValueError(
                f"causal.cgan.fake_label ({v}) must be below causal.cgan.real_label"
                f" ({info.data['real_label']}): the discriminator learns real → real_label,"
                " generated → fake_label (thesis: 0.8 and 0.2)"
            )
        return v


class CausalPreprocess(Section):
    """Outlier removal of the original code: drop the points farthest from
    their nearest random anchor."""

    outlier_fraction: Annotated[float, Field(ge=0, lt=1)]
    outlier_anchors: PosInt


Mechanism = Literal[
    "linear", "polynomial", "sigmoid_add", "gp_add", "gp_mix", "nn"
]  # cdt 0.6.0's sigmoid_mix fails on NumPy 2


class CausalSynthetic(Section):
    """Synthetic training pairs of the learned baselines (RCC, NCC):
    ``cdt.data.CausalPairGenerator``."""

    mechanisms: Annotated[list[Mechanism], Field(min_length=1)]
    noise_coeff: PosFloat


class BQCDParams(Section):
    """bQCD (Tagasovska et al., 2020): quantile levels, spline knots of the quantile regressions."""

    quantile_levels: PosInt
    knots: Annotated[int, Field(ge=2)]
    min_points: PosInt


class BootstrapParams(Section):
    """Percentile bootstrap over pairs for the accuracy CIs of Table 5.1."""

    samples: Annotated[int, Field(ge=100)]
    level: Probability


class CausalScale(Section):
    """Profile-dependent size of the causal experiment."""

    max_points: Annotated[int, Field(ge=20)]
    ensemble_size: PosInt
    ensemble_curve: Annotated[list[PosInt], Field(min_length=1)]
    hidden: PosInt
    epochs: PosInt
    batch_size: PosInt
    anm_fit_points: Annotated[int, Field(ge=20)]
    synthetic_pairs: Annotated[int, Field(ge=10)]
    synthetic_points: Annotated[int, Field(ge=20)]
    rcc_trees: PosInt
    ncc_epochs: PosInt
    pack_members: (
        PosInt  # CGANs per stacked model: speed and memory only, results do not depend on it
    )
    workers: PosInt  # processes training packs of pairs at once (CPU; one with a GPU)

    @field_validator("ensemble_curve")
    @classmethod
    def _within_ensemble(cls, v: list[int], info: ValidationInfo) -> list[int]:
        e = info.data.get("ensemble_size")
        if e is not None and max(v) > e:
            raise ValueError(
                f"every ensemble size of the curve must be at most ensemble_size ({e})"
            )
        return sorted(set(v))


Baseline = Literal["anm", "igci", "reci", "cds", "rcc", "ncc", "bqcd"]


class CausalParams(Section):
    """§5.4.2 / Table 5.1: CGAN-C2ST cause-effect discovery on the Tübingen pairs, and baselines."""

    preprocess: CausalPreprocess
    cgan: CGANParams
    baselines: list[Baseline]
    synthetic: CausalSynthetic
    bqcd: BQCDParams
    bootstrap: BootstrapParams
    figure_pairs: Annotated[list[PosInt], Field(min_length=1)]
    mini: CausalScale
    full: CausalScale

    @field_validator("figure_pairs")
    @classmethod
    def _known_pairs(cls, v: list[int]) -> list[int]:
        from oquab_repro.lib.tuebingen import id_ranges, official_pair_ids

        valid = official_pair_ids()
        unknown = [i for i in v if i not in valid]
        if unknown:
            raise ValueError(
                f"causal.figure_pairs names pairs {unknown} that are not among the {len(valid)}"
                f" bivariate Tübingen pairs; valid official ids: {id_ranges(valid)}"
            )
        return v


class MiniDataParams(Section):
    """Offline mini data drawn from scikit-learn's digits, in the official formats
    (lib/minidata.py)."""

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
    """Official datasets: archives fetched with checksums (lib/download.py),
    ImageNet from local paths.

    ``mirror`` replaces the official hosts by a URL prefix under which each archive sits at
    ``<host>/<path>`` of its official URL (``oquab-repro mirror build`` writes such a tree);
    ``mirror_manifest`` (a ``SHA256SUMS`` file) then replaces the published checksums. A manifest
    without a mirror would silently distrust the official archives, so it is rejected.
    """

    download_dir: str
    mirror: str | None
    mirror_manifest: str | None
    archives: list[str]
    imagenet_path: str
    imagenet_verify_md5: bool
    imagenet_fall11_path: str
    fall11_val_per_class: PosInt
    wordnet_fall11_path: str
    wordnet_is_a_path: str

    @field_validator("mirror")
    @classmethod
    def _http_prefix(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(
                "must be an http:// or https:// URL prefix, or null for the official hosts"
            )
        return v

    @field_validator("mirror_manifest")
    @classmethod
    def _manifest_needs_mirror(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("mirror") is None:
            raise ValueError(
                "a checksum manifest replaces the published checksums only for a mirror: "
                "set data.full.mirror too, or set mirror_manifest to null"
            )
        return v


class DataParams(Section):
    """Raw data under ``data/01_raw``: built offline (``mini``) or fetched (``full``)."""

    skip_corrupt: bool
    verify_fraction: Annotated[float, Field(gt=0, le=1)]
    mini: MiniDataParams
    full: FullDataParams


RANKED: tuple[str, ...] = ("pretrain", "transfer", "weak", "actions", "gan", "causal")
"""Pipelines whose nodes share their work among torch.distributed ranks (lib/distributed.py);
``kedro run`` of only these starts itself under torchrun when ``distributed`` asks for it.
The single networks (pretrain, transfer, weak, actions) train with DDP in ``lib/training.fit``;
``gan`` shares its grid cells and snapshot scoring, ``causal`` its CGAN-C2ST units. Their other
nodes run on every rank alike (only rank 0 writes)."""

GAN_DATASETS: dict[str, str] = {"lfw": "faces", "lsun_bedroom": "scenes"}
"""The DCGAN grid's image sets (folders data/01_raw/gan/<name>, stages gan@<name>), each with the
kind of images lib/minidata.py draws for it offline (mini profile). Declared here only: the data
stage, the gan stages and the generated dvc.yaml follow."""
GAN_LEVELS: tuple[str, ...] = ("small", "medium", "large")
"""Width levels of the gf × df grid; each profile maps them to channel counts
(gan.<profile>.widths)."""


class GanOptim(Section):
    """Appendix C: Adam with the DCGAN settings."""

    lr: PosFloat
    beta1: Probability


class GanFeaturiser(Section):
    """Network mapping images to the features the two-sample tests compare (§5.3.3)."""

    kind: Literal[
        "resnet34", "alexnet_bundle"
    ]  # torchvision ResNet-34, or a Ch. 3 pretrain stage's AlexNet (FC7)
    # resnet34: file under data/01_raw/weights or null (seeded random init);
    # alexnet_bundle: a pretrain stage's weights.safetensors
    weights: str | None
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

PRETRAIN_SOURCES: tuple[str, ...] = ("in1000c", "in1000r", "in1512")
"""The source networks (the thesis' 1000C, 1000R, 1512): stages pretrain@<source>, the data stage's
class sets (data/02_intermediate/data/class_sets.json keys) and transfer variants' ``source``."""
NO_SOURCE = "none"
"""A transfer variant's ``source`` when it starts from a random initialisation (NO PRETRAIN)."""
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
    """One of C1–C5: conv (channels, kernel, stride, padding) → ReLU →
    LRN? → max pool (0 = none)."""

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
    """SGD with the thesis schedule: lr divided by ``lr_factor`` on plateaus of the ``plateau_on``
    loss (``train``: the epoch's training cross-entropy, as §3.3 states; ``val``: the held-out
    loss), ``max_reductions`` times."""

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
    fc_dim: dict[
        str, PosInt
    ]  # FC6/FC7 width per source set (the thesis widens them for 1512 classes)
    max_epochs: PosInt
    batch_size: PosInt
    num_workers: NonNegInt
    crop_scale_min: Probability  # jitter: random-resized crop keeps at least this share of the area
    flip: bool
    cache_images: (
        bool  # decode the source images once and keep them in memory (mini-sized sets only)
    )
    torch_threads: (
        NonNegInt  # intra-op threads (0 = torch's default); 1 avoids spin-waiting on a shared CPU
    )

    @field_validator("fc_dim")
    @classmethod
    def _all_sources(cls, v: dict[str, Any]) -> dict[str, Any]:
        if set(v) != set(PRETRAIN_SOURCES):
            raise ValueError(
                f"must give a width for exactly the source sets {list(PRETRAIN_SOURCES)}, got"
                f" {sorted(v)}"
            )
        return v


class PretrainParams(Section):
    """§3.2.1: AlexNet pretraining on the source sets 1000C, 1000R and 1512 (mini equivalents)."""

    optim: OptimParams
    mini: PretrainProfile
    full: PretrainProfile


VariantName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class TransferVariant(Section):
    """One Table 3.1/3.2 row: the network it starts from, its frozen and adaptation layers."""

    source: str  # a pretrain source (its C1–FC7 are copied), or `none`: random init (NO PRETRAIN)
    frozen: list[TRANSFERABLE_LAYERS]
    adaptation_layers: Annotated[int, Field(ge=1, le=3)]

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v not in (NO_SOURCE, *PRETRAIN_SOURCES):
            raise ValueError(f"must be one of {[NO_SOURCE, *PRETRAIN_SOURCES]}")
        return v


class TransferProfile(Section):
    """Profile-specific transfer settings."""

    hidden_dim: PosInt  # width of each hidden adaptation layer (FCa: 2048 in the thesis)
    scratch_fc_dim: PosInt  # FC6/FC7 width of a variant with source `none` (as the pretrained nets)
    max_epochs: PosInt
    batch_size: PosInt
    num_workers: NonNegInt
    flip: bool
    # without jitter, crop every training patch once and keep the crops and the frozen layers'
    # outputs in memory (mini-sized sets only); false: outputs in files beside the checkpoints
    cache_crops: bool
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
    variants: Annotated[dict[VariantName, TransferVariant], Field(min_length=1)]  # in table order
    mini: TransferProfile
    full: TransferProfile

    def sources(self) -> dict[str, list[str]]:
        """Source network → its variants (one DVC stage transfer_<source> each), table order."""
        groups: dict[str, list[str]] = {}
        for name, variant in self.variants.items():
            groups.setdefault(variant.source, []).append(name)
        return groups


# ---------------------------------------------------------------------------------------------
# Chapter 4: weak supervision with global max pooling
# ---------------------------------------------------------------------------------------------

WEAK_DATASETS: tuple[str, ...] = ("voc", "coco")
"""Stages weak@<dataset> (dvc.yaml's foreach); each profile says where each set is."""
WEAK_SOURCE = "in1000c"
"""The pretrained network (stage pretrain@<source>) recast by Ch. 4
(fixed: it shapes the DVC deps)."""


class WeakVocSet(Section):
    """A Pascal VOC detection set under data/01_raw/voc (train on one
    image set, test on another)."""

    format: Literal["voc"]
    year: str
    train_set: str
    test_set: str


class WeakCocoSet(Section):
    """A COCO instances set under data/01_raw/coco (``<split>/`` images,
    ``annotations/instances_<split>.json``)."""

    format: Literal["coco"]
    train_set: str
    test_set: str


class WeakProfile(Section):
    """Profile-specific scale of the Ch. 4 experiments."""

    optim: OptimParams
    datasets: dict[str, WeakVocSet | WeakCocoSet]
    image_size: Annotated[
        int, Field(ge=16)
    ]  # S: largest side after rescaling, zero-padded to S×S (thesis: 500)
    hidden_dim: PosInt  # Ca width (thesis: 2048)
    dropout: Annotated[float, Field(ge=0, lt=1)]  # SpatialDropout in Ca
    frozen: list[TRANSFERABLE_LAYERS]  # pretrained layers kept fixed
    max_epochs: PosInt
    batch_size: PosInt
    location_tolerance: Annotated[float, Field(ge=0)]  # px in the original image (thesis: 18 px)
    figure_images: PosInt
    torch_threads: NonNegInt
    preload: bool  # decode every image once into memory (mini) | decode per item in workers (full)
    num_workers: NonNegInt  # DataLoader processes decoding and preparing images

    @field_validator("datasets")
    @classmethod
    def _every_dataset(cls, v: dict[str, Any]) -> dict[str, Any]:
        if set(v) != set(WEAK_DATASETS) or v["voc"].format != "voc" or v["coco"].format != "coco":
            raise ValueError(
                f"must define exactly {list(WEAK_DATASETS)} (voc: format voc, coco: format coco),"
                f" got {sorted(v)}"
            )
        return v


class WeakParams(Section):
    """§4.2–4.6: fully-convolutional net on the pretrained Ch. 3 network,
    trained from image labels."""

    # seeded share of the training images held out (validation; the lr follows optim.plateau_on)
    val_fraction: Probability
    train_scales: Annotated[
        list[PosFloat], Field(min_length=2, max_length=2)
    ]  # each batch rescaled by s ~ U[lo, hi]
    test_scales: Annotated[list[PosFloat], Field(min_length=1)]
    mini: WeakProfile
    full: WeakProfile

    @field_validator("train_scales")
    @classmethod
    def _range(cls, v: list[float]) -> list[float]:
        if v[0] > v[1]:
            raise ValueError("must be [low, high] with low ≤ high")
        return v


class ActionsProfile(Section):
    """Profile-specific action-classification settings."""

    max_epochs: PosInt
    batch_size: PosInt
    figure_persons: PosInt  # person crops drawn with their true and predicted actions


class ActionsParams(Section):
    """Table 3.3: one square, mirror-padded patch per person, 10 actions,
    adaptation layers trained."""

    train_set: str
    test_set: str
    # share of train_set images kept aside (validation; the lr follows transfer.optim.plateau_on)
    holdout_fraction: Probability
    side_factor: Annotated[float, Field(ge=1)]  # square side = side_factor × the box's longer side
    variants: Annotated[list[str], Field(min_length=1)]  # Table 3.3 rows: transfer.variants
    mini: ActionsProfile
    full: ActionsProfile

    @field_validator("test_set")
    @classmethod
    def _disjoint(cls, v: str, info: ValidationInfo) -> str:
        if v == info.data.get("train_set") or {v, info.data.get("train_set")} & {"trainval"}:
            raise ValueError(
                "must be a VOC action split disjoint from actions.train_set (e.g. train → val)"
            )
        return v


class DistributedParams(Section):
    """How many processes a training stage runs as (torch.distributed; README "Scaling out").

    An execution setting like the device: no DVC stage tracks it, so machines with different
    numbers of GPUs share one run-cache. Results are statistically the same for any count
    (DDP keeps the global batch; grid and ensemble units are seeded per unit, not per rank), but
    not bit for bit: DDP draws other dropout masks on each rank, and GAN cells packed into other
    grouped convolutions round differently, which ten epochs of adversarial training amplify.
    So the committed mini numbers come from one process, and ``per_stage`` is empty by default.
    """

    nproc_per_node: Literal["auto"] | PosInt  # auto: one per GPU with CUDA, else one per CPU core
    per_stage: dict[str, Literal["auto"] | PosInt]  # stage -> ranks, where it differs

    @field_validator("per_stage")
    @classmethod
    def _ranked_stages(
        cls, v: dict[str, Literal["auto"] | int]
    ) -> dict[str, Literal["auto"] | int]:
        if unknown := sorted(set(v) - set(RANKED)):
            raise ValueError(f"{unknown} cannot run as ranks; stages that can: {', '.join(RANKED)}")
        return v

    def nproc_for(self, stages: list[str]) -> Literal["auto"] | int:
        """The setting of a run of ``stages``: their common ``per_stage`` value, else
        ``nproc_per_node`` (a run of several stages with different settings uses the default)."""
        settings = {self.per_stage.get(stage, self.nproc_per_node) for stage in stages}
        return settings.pop() if len(settings) == 1 else self.nproc_per_node


MaybeCap = PosInt | None


class CapsParams(Section):
    """Limits on how much a run trains and reads, separate from the thesis' settings so that the
    full profile can be rehearsed end to end (README "Rehearsing the full profile") while every
    network keeps its full size and input resolution. ``null`` = no cap; all null = the thesis.
    Each stage reads, and DVC tracks, only the caps it applies (``dvc_yaml.declarations``)."""

    images_per_set: MaybeCap  # images of each split a stage reads (seeded choice); GAN eval samples
    steps_per_epoch: MaybeCap  # SGD steps of each epoch of lib/training.fit
    epochs: MaybeCap  # epochs of every training loop (fit, the causal CGANs)
    ensemble_size: MaybeCap  # CGANs per direction (causal); the ensemble curve stops there
    gan_snapshot_epochs: MaybeCap  # GAN snapshots kept: those at epochs ≤ this (≥ the first)


def cap(value: int, limit: int | None) -> int:
    """``value`` under a cap of :class:`CapsParams` (``None``: no cap)."""
    return value if limit is None else min(value, limit)


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
    causal: CausalParams
    patches: PatchesParams
    pretrain: PretrainParams
    transfer: TransferParams
    weak: WeakParams
    actions: ActionsParams
    caps: CapsParams

    @field_validator("actions")
    @classmethod
    def _actions_use_transfer_variants(
        cls, v: ActionsParams, info: ValidationInfo
    ) -> ActionsParams:
        transfer = info.data.get("transfer")
        unknown = [n for n in v.variants if transfer is not None and n not in transfer.variants]
        if unknown:
            raise ValueError(f"variants {unknown} are not in transfer.variants: add them there")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v in {"auto", "cpu", "cuda", "mps"} or v.startswith("cuda:"):
            return v
        raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")


SectionT = TypeVar("SectionT", bound=Section)


def with_profile(
    schema: type[SectionT], raw: Mapping[str, Any], profile: str
) -> tuple[SectionT, Any]:
    """Validate a params.yaml section and pick its ``mini`` / ``full`` part for ``profile``.

    The one way nodes read profile-dependent settings: ``cfg, prof = with_profile(WeakParams,
    params, profile)``.
    """
    cfg = schema.model_validate(raw)
    return cfg, getattr(cfg, profile)


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


def project_params(start: Path | None = None) -> Params:
    """The validated ``params.yaml`` of the project holding ``start`` (default: the working
    directory, where ``kedro`` and ``dvc`` run). Pipelines whose shape follows the parameters
    (one node per transfer variant, per Table 3.3 row) read it when Kedro creates them."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "params.yaml").is_file():
            return validate_params(read_params_file(folder / "params.yaml"), folder / "params.yaml")
    raise ParamsError(f"no params.yaml in {here} or its parents: run from the repository root.")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently, so an edit above a forgotten duplicate would change nothing)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key '{key}' given twice (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}): keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_params_file(path: Path) -> dict[str, Any]:
    """Parse ``params.yaml`` with a clear message when it is absent, not a mapping or holds a key
    twice."""
    if not path.is_file():
        raise ParamsError(
            f"{path}: not found. Run from the repository root, where params.yaml lives."
        )
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.constructor.ConstructorError as exc:
        raise ParamsError(f"{path}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: must be a mapping of parameter names to values.")
    return raw
