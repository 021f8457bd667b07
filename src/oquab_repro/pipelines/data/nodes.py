"""Kedro nodes of the data stage: build (mini) or fetch (full) the raw datasets, then validate them.

Both nodes work in a staging folder: ``build_raw_data`` writes every dataset there and
``validate_raw_data`` opens it through the loaders the stages use; only then are the folders handed
to the ``RawFolder`` outputs, which rename them into ``data/01_raw``. A failure at any point
removes the staging folder and leaves ``data/01_raw`` as it was, so nothing half-built or unchecked
can pass for the stage's output.

The full profile first inspects every input (ILSVRC-2012, the fall 2011 synsets, WordNet) and
tries every download, then stops with one message naming *all* that is missing, before it
extracts anything (:class:`oquab_repro.lib.download.MissingInputsError`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from oquab_repro.lib import datasets as D
from oquab_repro.lib import download, imagenet, minidata
from oquab_repro.lib.rawfolder import STAGING_PREFIX
from oquab_repro.params import DataParams, FullDataParams

log = logging.getLogger(__name__)

RAW = ("imagenet", "voc", "coco", "gan", "weights")
Staged = dict[str, Path]


def _build_mini(
    staging: Path, cfg: DataParams, seed: int
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    info = minidata.build_mini(staging, cfg.mini, seed)
    (staging / "weights").mkdir()
    (staging / "weights" / "README.txt").write_text(
        "Profile mini uses no downloaded weights: the GAN evaluation featurises with the Ch. 3"
        " network.\n"
    )
    return info, minidata.class_sets(seed)


def _inspect_imagenet(
    full: FullDataParams, seed: int
) -> tuple[Any, Any, dict[str, list[str]], list[str]]:
    """ILSVRC-2012, WordNet and the fall 2011 synsets the class sets need: found, or problems."""
    ilsvrc, problems = imagenet.find_ilsvrc(Path(full.imagenet_path))
    wordnet, more = imagenet.read_wordnet(
        Path(full.wordnet_fall11_path), Path(full.wordnet_is_a_path)
    )
    problems += more
    sets: dict[str, list[str]] = {}
    fall11 = None
    if ilsvrc is not None and wordnet is not None:
        sets = imagenet.class_sets(list(ilsvrc.classes), *wordnet, seed)
        extra = set().union(*sets.values()) - set(ilsvrc.classes)
        fall11, more = imagenet.find_fall11(
            Path(full.imagenet_fall11_path), extra, Path(full.download_dir)
        )
        problems += more
    return ilsvrc, fall11, sets, problems


def _fetch_full(
    staging: Path, cfg: DataParams, seed: int
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Inspect and download everything, name every problem at once, then
    install into ``staging``."""
    full = cfg.full
    download_dir = Path(full.download_dir)
    ilsvrc, fall11, sets, problems = _inspect_imagenet(full, seed)
    digests, more = download.download_all(
        full.archives, download_dir, full.mirror, full.mirror_manifest
    )
    problems += more
    if not problems and full.imagenet_verify_md5:
        manifest = (
            download.read_manifest(Path(full.mirror_manifest)) if full.mirror_manifest else None
        )
        problems += imagenet.verify_ilsvrc(ilsvrc, manifest)
    if problems:
        raise download.MissingInputsError(problems)
    archives = [download_dir / download.ARCHIVES[n].filename for n in full.archives]
    needed = download.archive_bytes(archives) + imagenet.needed_bytes(ilsvrc, fall11, staging)
    download.check_free_space(
        download_dir, needed, "ImageNet and the archives"
    )  # the staging folder lives there
    info: dict[str, Any] = imagenet.install_ilsvrc(ilsvrc, staging / "imagenet")
    info |= imagenet.install_fall11(fall11, staging / "imagenet", full.fall11_val_per_class, seed)
    for name in full.archives:
        download.install(name, download_dir, staging)
    for sub in RAW:
        (staging / sub).mkdir(exist_ok=True)
    info["sha256"] = digests
    return info, sets


def build_raw_data(
    profile: str, params: dict[str, Any], seed: int
) -> tuple[Staged, dict[str, Any], dict[str, list[str]]]:
    """Build every dataset in a staging folder; return its parts, the build facts
    and the source class sets."""
    cfg = DataParams.model_validate(params)
    start = time.perf_counter()
    if profile == "mini":
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    else:
        download_dir = Path(cfg.full.download_dir)
        download_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=download_dir, prefix=STAGING_PREFIX)
        )  # same disk: moves are renames
    try:
        info, sets = (
            _build_mini(staging, cfg, seed)
            if profile == "mini"
            else _fetch_full(staging, cfg, seed)
        )
    except BaseException:
        shutil.rmtree(
            staging, ignore_errors=True
        )  # downloads stay in download_dir; the staging goes
        raise
    info["build_seconds"] = round(time.perf_counter() - start, 2)
    log.info("Raw data built in %.1f s", info["build_seconds"])
    return {name: staging / name for name in RAW}, info, sets


def _check(dataset: Any, fraction: float, rng: np.random.Generator, desc: str) -> int:
    """Load a seeded share of the samples through the loader; return how
    many were skipped as corrupt."""
    n = len(dataset)
    count = max(1, int(round(fraction * n)))
    for index in tqdm(
        np.sort(rng.choice(n, size=count, replace=False)), desc=f"check {desc}", leave=False
    ):
        dataset[int(index)]
    return len(dataset.skipped)


def _voc_sets(voc: Path) -> list[tuple[str, str]]:
    found = []
    for year, sets in (("2007", ("trainval", "test")), ("2012", ("trainval",))):
        for image_set in sets:
            if (
                voc / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt"
            ).is_file():
                found.append((year, image_set))
    return found


def _check_class_sets(
    imagenet_root: Path, classes: dict[str, list[str]], sets: dict[str, list[str]]
) -> None:
    """Every class of every source set has a train and a val folder
    (pretrain would fail hours later)."""
    for name, wnids in sets.items():
        for split, present in classes.items():
            missing = sorted(set(wnids) - set(present))
            if missing:
                raise D.DataError(
                    f"{imagenet_root / split}: source set {name} needs {len(missing)} class"
                    f" folder(s) that are missing ({', '.join(missing[:10])}); re-run `dvc repro"
                    " data` after restoring them."
                )


def _datasets(staged: Staged, cfg: DataParams, profile: str) -> list[tuple[str, Any]]:
    """(metric name, loader) for every dataset present under the staging folders."""
    imagenet_root, voc, coco, gan = staged["imagenet"], staged["voc"], staged["coco"], staged["gan"]
    skip = cfg.skip_corrupt
    found: list[tuple[str, Any]] = [
        (f"imagenet_{s}", D.imagenet_folder(imagenet_root, s, skip_corrupt=skip))
        for s in ("train", "val")
    ]
    found += [
        (f"voc{y}_{s}", D.voc_detection(voc, y, s, skip_corrupt=skip)) for y, s in _voc_sets(voc)
    ]
    if (voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Action").is_dir():
        found.append(("voc2012_action", D.voc_actions(voc, "trainval", skip_corrupt=skip)))
    for split in ("train2014", "val2014"):
        annotations = coco / "annotations" / f"instances_{split}.json"
        if not annotations.is_file() and profile == "full":
            log.warning("COCO %s not fetched (data.full.archives): skipped", split)
            continue
        found.append(
            (f"coco_{split}", D.coco_detection(coco / split, annotations, skip_corrupt=skip))
        )
    found += [
        (f"gan_{f.name}", D.gan_images(f.name, f, 32, skip_corrupt=skip))
        for f in sorted(gan.iterdir())
        if f.is_dir()
    ]
    return found


def _count_name(name: str) -> str:
    return "voc2012_action_persons" if name == "voc2012_action" else f"{name}_images"


def _validate(
    staged: Staged,
    info: dict[str, Any],
    sets: dict[str, list[str]],
    profile: str,
    cfg: DataParams,
    seed: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    metrics: dict[str, Any] = dict(info)  # full: includes each archive's sha256 as received
    skipped, clipped, folders = {}, {}, {}
    for name, ds in _datasets(staged, cfg, profile):
        metrics[_count_name(name)] = len(ds)
        skipped[name] = _check(ds, cfg.verify_fraction, rng, name.replace("_", " "))
        if hasattr(ds, "clipped_boxes"):
            clipped[name] = ds.clipped_boxes
        if hasattr(ds, "categories"):
            metrics["coco_categories"] = len(ds.categories)
        if name.startswith("imagenet_"):
            folders[name.removeprefix("imagenet_")] = ds.classes
            metrics["imagenet_classes"] = len(ds.classes)
    _check_class_sets(staged["imagenet"], folders, sets)
    metrics["weight_files"] = sum(1 for p in staged["weights"].iterdir() if p.suffix == ".pth")
    metrics["skipped_corrupt"] = skipped
    metrics["skipped_corrupt_total"] = sum(skipped.values())
    metrics["clipped_boxes"] = clipped
    metrics["clipped_boxes_total"] = sum(clipped.values())
    metrics["source_class_sets"] = {name: len(wnids) for name, wnids in sets.items()}
    metrics["validate_seconds"] = round(time.perf_counter() - start, 2)
    return metrics


def validate_raw_data(
    staged: Staged,
    info: dict[str, Any],
    sets: dict[str, list[str]],
    profile: str,
    params: dict[str, Any],
    seed: int,
) -> tuple[Path, Path, Path, Path, Path, dict[str, Any], dict[str, list[str]], dict[str, float]]:
    """Open every staged dataset through the loaders the stages use; count samples,
    corrupt files, clipped boxes.

    Returns the staged folders for the ``RawFolder`` outputs (which move them into data/01_raw) only
    when everything passed (otherwise the staging folder is removed and the error names the file),
    the metrics, the class sets and the build and check wall times.
    """
    cfg = DataParams.model_validate(params)
    try:
        metrics = _validate(staged, info, sets, profile, cfg, seed)
    except BaseException:
        shutil.rmtree(staged["imagenet"].parent, ignore_errors=True)
        raise
    timings = {k: metrics.pop(k) for k in ("build_seconds", "validate_seconds") if k in metrics}
    return (*(staged[name] for name in RAW), metrics, sets, timings)  # type: ignore[return-value]
