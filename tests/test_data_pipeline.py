"""The data stage's nodes on a small mini build: staging → data/01_raw → validation metrics."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.io import DatasetError

from oquab_repro.lib import download as dl
from oquab_repro.lib.datasets import DataError
from oquab_repro.lib.rawfolder import RawFolder
from oquab_repro.params import DataParams
from oquab_repro.pipelines.data import nodes

from .http_server import ArchiveServer
from .test_datasets import SMALL

ROOT = Path(__file__).resolve().parents[1]
RAW_NAMES = ("imagenet", "voc", "coco", "gan", "weights")


def _params(**overrides: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]
    return DataParams.model_validate({**data, "mini": SMALL, **overrides}).model_dump()


def _build(profile: str, params: dict[str, Any], seed: int, out: Path) -> tuple[list[Path], dict[str, Any], dict[str, list[str]]]:
    """Run the stage's two nodes, then save the folders as Kedro would; return them, metrics, sets."""
    staged, info, sets = nodes.build_raw_data(profile, params, seed)
    *folders, metrics, sets = nodes.validate_raw_data(staged, info, sets, profile, params, seed)
    moved = []
    for name, path in zip(RAW_NAMES, folders, strict=True):
        dataset = RawFolder(str(out / name))
        dataset.save(path)
        moved.append(dataset.load())
    assert not folders[0].parent.exists()  # the staging area is gone once everything moved
    return moved, metrics, sets


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, Any], dict[str, list[str]]]:
    return _build("mini", _params(), 1, tmp_path_factory.mktemp("01_raw"))


def _staged_copy(folders: list[Path], tmp_path: Path) -> dict[str, Path]:
    staging = tmp_path / "oquab-staging-copy"
    for name, folder in zip(RAW_NAMES, folders, strict=True):
        shutil.copytree(folder, staging / name)
    return {name: staging / name for name in RAW_NAMES}


def test_validation_counts_every_dataset(raw: tuple[list[Path], dict[str, Any], dict[str, list[str]]]) -> None:
    _, metrics, sets = raw
    assert metrics["imagenet_train_images"] == 120 * SMALL["source_train_per_class"]
    assert metrics["voc2007_trainval_images"] == SMALL["voc_trainval"] == metrics["coco_train2014_images"]
    assert metrics["voc2007_test_images"] == SMALL["voc_test"] == metrics["coco_val2014_images"]
    assert metrics["gan_lfw_images"] == metrics["gan_lsun_bedroom_images"] == SMALL["gan_images"]
    assert metrics["coco_categories"] == 20 and metrics["skipped_corrupt_total"] == 0
    assert metrics["build_seconds"] > 0 and metrics["weight_files"] == 0
    assert {k: len(v) for k, v in sets.items()} == metrics["source_class_sets"] == {"1000C": 60, "1000R": 60, "1512": 80}


def test_corrupt_image_is_counted_or_stops_the_stage(raw: tuple[list[Path], dict[str, Any], dict[str, list[str]]], tmp_path: Path) -> None:
    folders, info, sets = raw
    staged = _staged_copy(folders, tmp_path)
    bad = sorted((staged["imagenet"] / "val").rglob("*.JPEG"))[5]
    bad.write_bytes(bad.read_bytes()[:30])
    *_, metrics, _ = nodes.validate_raw_data(staged, info, sets, "mini", _params(skip_corrupt=True), 1)
    assert metrics["skipped_corrupt"]["imagenet_val"] == 1 and metrics["skipped_corrupt_total"] == 1
    with pytest.raises(DataError, match=rf"{bad.name}: unreadable image"):
        nodes.validate_raw_data(staged, info, sets, "mini", _params(skip_corrupt=False), 1)
    assert not staged["imagenet"].parent.exists()  # a failed check removes the staging: nothing unchecked is kept


def test_raw_folder_replaces_atomically_and_explains_a_missing_folder(tmp_path: Path) -> None:
    target = RawFolder(str(tmp_path / "raw" / "voc"))
    with pytest.raises(DatasetError, match="dvc repro data"):
        target.load()
    for generation in ("old", "new"):
        staged = tmp_path / f"stage-{generation}"
        (staged / generation).mkdir(parents=True)
        target.save(staged)
    assert [p.name for p in target.load().iterdir()] == ["new"]
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["voc"]


def _pack(root: Path, folder: Path, kind: str, arcname: str | None = None) -> bytes:
    """Archive ``folder`` (as ``arcname``) the way the official archives are laid out."""
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for f in sorted(folder.rglob("*")):
                z.write(f, (Path(arcname or folder.name) / f.relative_to(folder)).as_posix())
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tgz" else "w") as t:
            t.add(folder, arcname=arcname or folder.name)
    return buf.getvalue()


def test_full_profile_fetches_verifies_and_validates_offline(
    raw: tuple[list[Path], dict[str, Any]], server: ArchiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full code path end to end, with official-layout archives served from 127.0.0.1."""
    folders, _ = raw
    imagenet_src, voc, coco, gan = folders[0], folders[1], folders[2], folders[3]
    served = {
        "voc": (_pack(tmp_path, voc / "VOCdevkit", "tar"), "voc", None),
        "coco_train": (_pack(tmp_path, coco / "train2014", "zip"), "coco", None),
        "coco_val": (_pack(tmp_path, coco / "val2014", "zip"), "coco", None),
        "coco_ann": (_pack(tmp_path, coco / "annotations", "zip"), "coco", None),
        "lfw": (_pack(tmp_path, gan / "lfw", "tgz", "lfw_funneled"), "gan/lfw", "lfw_funneled"),
    }
    for name, (data, dest, strip) in served.items():
        server.files[f"/{name}"] = data
        checksum = "md5:" + hashlib.md5(data).hexdigest()
        monkeypatch.setitem(dl.ARCHIVES, name, dl.Archive(server.url(f"/{name}"), checksum, dest, strip))
    weights = b"\x00weights" * 100
    server.files["/resnet34-x.pth"] = weights
    monkeypatch.setitem(
        dl.ARCHIVES, "weights", dl.Archive(server.url("/resnet34-x.pth"), "sha256:" + hashlib.sha256(weights).hexdigest()[:8], "weights", unpack=False)
    )
    ilsvrc = tmp_path / "ILSVRC2012"  # 1000 extracted class folders, one small image each
    image = next((imagenet_src / "val").rglob("*.JPEG")).read_bytes()
    for split in ("train", "val"):
        for k in range(1000):
            (ilsvrc / split / f"n{k:08d}").mkdir(parents=True)
            (ilsvrc / split / f"n{k:08d}" / f"{k}.JPEG").write_bytes(image)
    params = _params(
        full={
            "download_dir": str(tmp_path / "downloads"),
            "archives": [*served, "weights"],
            "imagenet_path": str(ilsvrc),
            "imagenet_verify_md5": False,
            "wordnet_fall11_path": str(tmp_path / "absent.txt"),
            "wordnet_is_a_path": str(tmp_path / "absent.txt"),
        },
        verify_fraction=0.2,
    )
    *staged, info = nodes.build_raw_data("full", params, seed=0)
    out = tmp_path / "01_raw"
    moved = []
    for name, path in zip(RAW_NAMES, staged, strict=True):
        RawFolder(str(out / name)).save(path)
        moved.append(out / name)
    metrics, sets = nodes.validate_raw_data(*moved, info, "full", params, 0)
    assert metrics["imagenet_classes"] == 1000 and metrics["imagenet_val_images"] == 1000
    assert metrics["voc2007_test_images"] == SMALL["voc_test"] and metrics["voc2012_action_persons"] > 0
    assert metrics["coco_val2014_images"] == SMALL["voc_test"] and metrics["gan_lfw_images"] == SMALL["gan_images"]
    assert metrics["weight_files"] == 1 and metrics["sha256"]["weights"] == hashlib.sha256(weights).hexdigest()
    assert list(sets) == ["1000C"] and len(sets["1000C"]) == 1000
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(["voc", "coco_train", "coco_val", "coco_ann", "lfw", "resnet34-x.pth"])


def test_full_profile_failure_leaves_no_staging(tmp_path: Path) -> None:
    params = _params(
        full={
            "download_dir": str(tmp_path / "downloads"),
            "archives": [],
            "imagenet_path": str(tmp_path / "no-imagenet"),
            "imagenet_verify_md5": False,
            "wordnet_fall11_path": "x",
            "wordnet_is_a_path": "x",
        }
    )
    with pytest.raises(dl.DownloadError, match="no-imagenet: folder not found"):
        nodes.build_raw_data("full", params, seed=0)
    assert list((tmp_path / "downloads").iterdir()) == []
