"""Kedro nodes of the data stage: build (mini) or fetch (full) the raw datasets, then validate them."""

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
from oquab_repro.lib import download, minidata
from oquab_repro.lib.rawfolder import STAGING_PREFIX
from oquab_repro.params import DataParams

log = logging.getLogger(__name__)


def _build_mini(staging: Path, cfg: DataParams, seed: int) -> dict[str, Any]:
    info = minidata.build_mini(staging, cfg.mini, seed)
    (staging / "weights").mkdir()
    (staging / "weights" / "README.txt").write_text(
        "Profile mini uses no downloaded weights: the GAN evaluation featurises with the Ch. 3 network.\n"
    )
    return info


def _fetch_full(staging: Path, cfg: DataParams) -> dict[str, Any]:
    full = cfg.full
    info: dict[str, Any] = download.prepare_imagenet(Path(full.imagenet_path), staging / "imagenet", full.imagenet_verify_md5)
    info["sha256"] = download.fetch_archives(full.archives, Path(full.download_dir), staging)
    for sub in ("voc", "coco", "gan", "weights"):
        (staging / sub).mkdir(exist_ok=True)
    return info


def build_raw_data(
    profile: str, params: dict[str, Any], seed: int
) -> tuple[Path, Path, Path, Path, Path, dict[str, Any], float]:
    """Build every dataset in a staging folder; the ``RawFolder`` outputs move them into data/01_raw
    atomically. Also returns what the build found (counts, checksums) and its wall time."""
    cfg = DataParams.model_validate(params)
    start = time.perf_counter()
    if profile == "mini":
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    else:
        download_dir = Path(cfg.full.download_dir)
        download_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=download_dir, prefix=STAGING_PREFIX))  # same disk: moves are renames
    try:
        info = _build_mini(staging, cfg, seed) if profile == "mini" else _fetch_full(staging, cfg)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # downloads stay in download_dir; the staging goes
        raise
    seconds = round(time.perf_counter() - start, 2)
    log.info("Raw data built in %.1f s", seconds)
    folders = (staging / name for name in ("imagenet", "voc", "coco", "gan", "weights"))
    return (*folders, info, seconds)


def _check(dataset: Any, fraction: float, rng: np.random.Generator, desc: str) -> int:
    """Load a seeded share of the samples through the loader; return how many were skipped as corrupt."""
    n = len(dataset)
    count = max(1, int(round(fraction * n)))
    for index in tqdm(np.sort(rng.choice(n, size=count, replace=False)), desc=f"check {desc}", leave=False):
        dataset[int(index)]
    return len(dataset.skipped)


def _voc_sets(voc: Path) -> list[tuple[str, str]]:
    found = []
    for year, sets in (("2007", ("trainval", "test")), ("2012", ("trainval",))):
        for image_set in sets:
            if (voc / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
                found.append((year, image_set))
    return found


def _class_sets(profile: str, classes: list[str], cfg: DataParams, seed: int) -> dict[str, list[str]]:
    if profile == "mini":
        return minidata.class_sets(seed)
    full = cfg.full
    fall11 = Path(full.wordnet_fall11_path)
    is_a = Path(full.wordnet_is_a_path)
    if not fall11.is_file():
        log.warning("%s not found: source sets 1000R and 1512 unavailable (set data.full.wordnet_fall11_path).", fall11)
    if not is_a.is_file():
        log.warning("%s not found: source set 1512 unavailable (set data.full.wordnet_is_a_path).", is_a)
    return download.class_sets(
        classes,
        fall11.read_text().split() if fall11.is_file() else None,
        download.read_is_a(is_a) if is_a.is_file() else None,
        seed,
    )


def validate_raw_data(
    imagenet: Path,
    voc: Path,
    coco: Path,
    gan: Path,
    weights: Path,
    info: dict[str, Any],
    build_seconds: float,
    profile: str,
    params: dict[str, Any],
    seed: int,
) -> tuple[dict[str, Any], dict[str, list[str]], dict[str, float]]:
    """Open every dataset through the same loaders the stages use; count samples, objects, corrupt
    files. Returns the metrics, the source class sets and the build and check wall times."""
    cfg = DataParams.model_validate(params)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    metrics: dict[str, Any] = dict(info)  # full: includes each archive's sha256 as received
    skipped: dict[str, int] = {}
    classes: list[str] = []
    for split in ("train", "val"):
        ds = D.imagenet_folder(imagenet, split, skip_corrupt=cfg.skip_corrupt)
        classes = ds.classes
        metrics[f"imagenet_{split}_images"] = len(ds)
        metrics["imagenet_classes"] = len(ds.classes)
        skipped[f"imagenet_{split}"] = _check(ds, cfg.verify_fraction, rng, f"imagenet {split}")
    for year, image_set in _voc_sets(voc):
        ds = D.voc_detection(voc, year, image_set, skip_corrupt=cfg.skip_corrupt)
        metrics[f"voc{year}_{image_set}_images"] = len(ds)
        skipped[f"voc{year}_{image_set}"] = _check(ds, cfg.verify_fraction, rng, f"voc{year} {image_set}")
    if (voc / "VOCdevkit" / "VOC2012" / "ImageSets" / "Action").is_dir():
        ds = D.voc_actions(voc, "trainval", skip_corrupt=cfg.skip_corrupt)
        metrics["voc2012_action_persons"] = len(ds)
        skipped["voc2012_action"] = _check(ds, cfg.verify_fraction, rng, "voc2012 action")
    for split in ("train2014", "val2014"):
        if not (coco / "annotations" / f"instances_{split}.json").is_file() and profile == "full":
            log.warning("COCO %s not fetched (data.full.archives): skipped", split)
            continue
        ds = D.coco_detection(coco / split, coco / "annotations" / f"instances_{split}.json", skip_corrupt=cfg.skip_corrupt)
        metrics[f"coco_{split}_images"] = len(ds)
        metrics["coco_categories"] = len(ds.categories)
        skipped[f"coco_{split}"] = _check(ds, cfg.verify_fraction, rng, f"coco {split}")
    for folder in sorted(p for p in gan.iterdir() if p.is_dir()):
        ds = D.gan_images(folder.name, folder, 32, skip_corrupt=cfg.skip_corrupt)
        metrics[f"gan_{folder.name}_images"] = len(ds)
        skipped[f"gan_{folder.name}"] = _check(ds, cfg.verify_fraction, rng, f"gan {folder.name}")
    metrics["weight_files"] = sum(1 for p in weights.iterdir() if p.suffix == ".pth")
    metrics["skipped_corrupt"] = skipped
    metrics["skipped_corrupt_total"] = sum(skipped.values())
    validate_seconds = round(time.perf_counter() - start, 2)
    timings = {"build_seconds": build_seconds, "validate_seconds": validate_seconds}
    sets = _class_sets(profile, classes, cfg, seed)
    metrics["source_class_sets"] = {name: len(wnids) for name, wnids in sets.items()}
    return metrics, sets, timings
