"""The data stage's nodes on a small mini build: staging → data/01_raw → validation metrics."""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kedro.io import DatasetError

from oquab_repro.lib import datasets as D
from oquab_repro.lib import download as dl
from oquab_repro.lib import features, imagenet, mirror
from oquab_repro.lib.datasets import DataError
from oquab_repro.lib.rawfolder import RawFolder
from oquab_repro.lib.tuebingen import read_pairs
from oquab_repro.params import DataParams
from oquab_repro.pipelines.actions import nodes as actions_nodes
from oquab_repro.pipelines.data import nodes
from oquab_repro.pipelines.weak import nodes as weak_nodes

from .conftest import SMALL_MIRROR
from .http_server import ArchiveServer
from .test_datasets import SMALL

ROOT = Path(__file__).resolve().parents[1]
RAW_NAMES = ("imagenet", "voc", "coco", "gan", "weights")


def _params(**overrides: Any) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]
    return DataParams.model_validate({**data, "mini": SMALL, **overrides}).model_dump()


def _build(
    profile: str, params: dict[str, Any], seed: int, out: Path
) -> tuple[list[Path], dict[str, Any], dict[str, list[str]]]:
    """Run the stage's two nodes, then save the folders as Kedro would;
    return them, metrics, sets."""
    staged, info, sets = nodes.build_raw_data(profile, params, seed)
    *folders, metrics, sets, timings = nodes.validate_raw_data(
        staged, info, sets, profile, params, seed
    )
    assert timings["build_seconds"] > 0 and timings["validate_seconds"] >= 0
    assert not any("seconds" in k for k in metrics)  # wall times stay out of the DVC metrics
    moved = []
    for name, path in zip(RAW_NAMES, folders, strict=True):
        dataset = RawFolder(str(out / name))
        dataset.save(path)
        moved.append(dataset.load())
    assert not folders[0].parent.exists()  # the staging area is gone once everything moved
    return moved, metrics, sets


@pytest.fixture(scope="module")
def raw(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[Path], dict[str, Any], dict[str, list[str]]]:
    return _build("mini", _params(), 1, tmp_path_factory.mktemp("01_raw"))


def _staged_copy(folders: list[Path], tmp_path: Path) -> dict[str, Path]:
    staging = tmp_path / "oquab-staging-copy"
    for name, folder in zip(RAW_NAMES, folders, strict=True):
        shutil.copytree(folder, staging / name)
    return {name: staging / name for name in RAW_NAMES}


def test_validation_counts_every_dataset(
    raw: tuple[list[Path], dict[str, Any], dict[str, list[str]]],
) -> None:
    _, metrics, sets = raw
    assert metrics["imagenet_train_images"] == 120 * SMALL["source_train_per_class"]
    assert (
        metrics["voc2007_trainval_images"]
        == SMALL["voc_trainval"]
        == metrics["coco_train2014_images"]
    )
    assert metrics["voc2007_test_images"] == SMALL["voc_test"] == metrics["coco_val2014_images"]
    assert metrics["gan_lfw_images"] == metrics["gan_lsun_bedroom_images"] == SMALL["gan_images"]
    assert metrics["coco_categories"] == 20 and metrics["skipped_corrupt_total"] == 0
    assert metrics["weight_files"] == 0
    assert (
        {k: len(v) for k, v in sets.items()}
        == metrics["source_class_sets"]
        == {"in1000c": 60, "in1000r": 60, "in1512": 80}
    )


def test_corrupt_image_is_counted_or_stops_the_stage(
    raw: tuple[list[Path], dict[str, Any], dict[str, list[str]]], tmp_path: Path
) -> None:
    folders, info, sets = raw
    staged = _staged_copy(folders, tmp_path)
    bad = sorted((staged["imagenet"] / "val").rglob("*.JPEG"))[5]
    bad.write_bytes(bad.read_bytes()[:30])
    *_, metrics, _, _ = nodes.validate_raw_data(
        staged, info, sets, "mini", _params(skip_corrupt=True), 1
    )
    assert metrics["skipped_corrupt"]["imagenet_val"] == 1 and metrics["skipped_corrupt_total"] == 1
    with pytest.raises(DataError, match=rf"{bad.name}: unreadable image"):
        nodes.validate_raw_data(staged, info, sets, "mini", _params(skip_corrupt=False), 1)
    assert not staged[
        "imagenet"
    ].parent.exists()  # a failed check removes the staging: nothing unchecked is kept


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


# ---------------------------------------------------------------------- full profile, from a mirror


def serve_mirror(server: ArchiveServer, root: Path, only: set[str] | None = None) -> str:
    """Put the mirror's HTTP files on the loopback server; return the mirror URL prefix."""
    for path in mirror.iter_files(root):
        rel = path.relative_to(root).as_posix()
        if "." in rel.split("/", 1)[0] and (
            only is None or rel in only
        ):  # <host>/<path> entries only
            server.files[f"/{rel}"] = path.read_bytes()
    return server.url("")


def full_params(
    root: Path, url: str, tmp_path: Path, archives: list[str] | None = None, **overrides: Any
) -> dict[str, Any]:
    full = {
        **_params()["full"],
        **mirror.params_for(root, url),
        "download_dir": str(tmp_path / "downloads"),
    }
    if archives is not None:
        full["archives"] = archives
    return _params(full={**full, **overrides})


def _served_archive(name: str) -> set[str]:
    return {dl.ARCHIVES[name].mirror_path}


def test_full_profile_from_the_mirror_feeds_every_loader(
    small_mirror: Path, server: ArchiveServer, tmp_path: Path
) -> None:
    """`profile: full` end to end on the rehearsal mirror over loopback HTTP,
    then each stage's reader."""
    params = full_params(small_mirror, serve_mirror(server, small_mirror), tmp_path)
    folders, metrics, sets = _build("full", params, 0, tmp_path / "01_raw")
    imagenet_root, voc, coco, gan, weights = folders
    n = SMALL_MIRROR
    assert {k: len(v) for k, v in sets.items()} == {
        "in1000c": 20,
        "in1000r": 20,
        "in1512": 20 + n["fall11_subtree"],
    }
    extra = len(set().union(*sets.values()) - set(sets["in1000c"]))
    assert metrics["imagenet_classes"] == 20 + extra == metrics["fall11_synsets"] + 20
    assert (
        metrics["imagenet_train_images"] == 20 * n["imagenet_train"] + extra
        and metrics["imagenet_val_images"] == 20 + extra
    )
    assert (
        metrics["voc2007_trainval_images"] == n["voc2007_trainval"]
        and metrics["voc2007_test_images"] == n["voc2007_test"]
    )
    assert (
        metrics["voc2012_trainval_images"] == n["voc2012_trainval"]
        and metrics["voc2012_action_persons"] >= n["voc2012_actions"]
    )
    assert metrics["coco_train2014_images"] == n["coco_train"] and metrics["coco_categories"] == 80
    assert (
        metrics["gan_lsun_bedroom_images"] == n["lsun_train"]
        and metrics["gan_lfw_images"] >= n["lfw_people"]
    )
    assert (
        metrics["weight_files"] == 1
        and metrics["skipped_corrupt_total"] == 0
        and metrics["clipped_boxes_total"] == 0
    )
    served = {
        line.split("  ")[1]: line.split("  ")[0]
        for line in (small_mirror / "SHA256SUMS").read_text().splitlines()
    }
    assert metrics["sha256"] == {
        k: served[dl.ARCHIVES[k].mirror_path] for k in dl.ARCHIVES
    }  # checked against the manifest
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == sorted(
        a.filename for a in dl.ARCHIVES.values()
    )

    # Ch. 3 pretraining: every source set resolves to class folders with train and val images
    for wnids in sets.values():
        for split in ("train", "val"):
            assert D.imagenet_folder(imagenet_root, split, classes=wnids).classes == wnids
    # Ch. 3 patches/transfer (VOC2007), Ch. 4 weak (VOC2012 Main, COCO via
    # pycocotools), Table 3.3 (actions)
    for split in ("train", "val", "test"):
        assert len(D.voc_detection(voc, "2007", split)) > 0
    weak = yaml.safe_load((ROOT / "params.yaml").read_text())["weak"]
    for dataset in ("voc", "coco"):
        loaded = weak_nodes.load_sets(voc, coco, weak, "full", 0, False, None, dataset=dataset)
        assert (
            len(loaded["classes"]) == (20 if dataset == "voc" else 80) and loaded["test"]["images"]
        )
        boxes = torch.cat(
            [t["boxes"] for t in loaded["train"]["targets"] + loaded["val"]["targets"]]
        )
        assert len(boxes) > 0 and (boxes[:, 2:] > boxes[:, :2]).all()
    crops = actions_nodes.person_crops(voc, "train", 1.0, 224, False)
    assert crops["crops"].shape[1:] == (3, 224, 224) and crops["labels"].shape[1] == len(
        D.VOC_ACTIONS
    )
    # Ch. 5 GANs: LFW folders and LSUN's LMDB at 64 px; ResNet-34 weights for gan.full.featuriser
    for name in ("lfw", "lsun_bedroom"):
        assert D.gan_images(name, gan / name, 64)[0].shape == (3, 64, 64)
    featurise = features.resnet34_featuriser(
        weights / "resnet34-b627a593.pth",
        served[dl.ARCHIVES["resnet34_imagenet"].mirror_path][:8],
        224,
        0,
    )
    assert featurise(torch.zeros(2, 3, 64, 64)).shape == (2, 512)
    # Ch. 5.4 Tübingen (stage data_tuebingen reads the official layout): the mirror's pairs.zip as
    # the causal stage reads it
    dl.fetch_archive(
        dl.TUEBINGEN,
        tmp_path / "downloads",
        tmp_path / "tuebingen",
        params["full"]["mirror"],
        params["full"]["mirror_manifest"],
    )
    files = {p.stem: p.read_text() for p in (tmp_path / "tuebingen").glob("*.txt")}
    pairs, multivariate = read_pairs(files)
    assert len(pairs) + len(multivariate) == n["tuebingen_pairs"] and multivariate == [
        "0006",
        "0012",
    ]
    assert {p.a_causes_b for p in pairs} == {True, False}  # both column orders occur


# -------------------------------------------------------------------------- bad input at full scale


def _assert_nothing_half_written(tmp_path: Path, raw: Path) -> None:
    """No staging folder, no unverified archive under its final name, data/01_raw untouched."""
    downloads = tmp_path / "downloads"
    left = [p.name for p in downloads.iterdir()] if downloads.exists() else []
    assert not [n for n in left if n.startswith("oquab-staging-")], left
    for name in left:
        archive = next((a for a in dl.ARCHIVES.values() if a.filename == name), None)
        assert (
            archive is None or name.endswith(".part") or archive.filename == name
        )  # complete files were verified
    assert [p.name for p in raw.iterdir()] == ["voc"] and (
        raw / "voc" / "previous.txt"
    ).read_text() == "complete"


@pytest.fixture()
def previous_raw(tmp_path: Path) -> Path:
    """A data/01_raw from an earlier successful run, which a failed run must leave as it was."""
    raw = tmp_path / "01_raw"
    (raw / "voc").mkdir(parents=True)
    (raw / "voc" / "previous.txt").write_text("complete")
    return raw


def _fails(params: dict[str, Any], error: type[Exception]) -> str:
    with pytest.raises(error) as caught:
        nodes.build_raw_data("full", params, 0)
    return str(caught.value)


def test_missing_imagenet_class_folder_is_named(
    small_mirror: Path, tmp_path: Path, previous_raw: Path
) -> None:
    src = tmp_path / "extracted"
    found, _ = imagenet.find_ilsvrc(small_mirror / mirror.ILSVRC_DIR)
    imagenet.install_ilsvrc(found, src)  # the extracted-folders layout the project also accepts
    devkit = imagenet.ILSVRC_ARCHIVES["devkit"][0]
    (src / devkit).symlink_to(
        small_mirror / mirror.ILSVRC_DIR / devkit
    )  # names the classes an extraction should have
    missing = found.classes[3]
    shutil.rmtree(src / "val" / missing)
    params = full_params(
        small_mirror, "http://127.0.0.1:9", tmp_path, archives=[], imagenet_path=str(src)
    )
    message = _fails(params, dl.MissingInputsError)
    assert "1 input(s) of the full profile are missing or bad" in message
    assert f"{src / 'val'}/: class folder(s) {missing} missing; re-extract ILSVRC-2012" in message
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_missing_fall11_synsets_are_named_and_listed(
    small_mirror: Path, tmp_path: Path, previous_raw: Path
) -> None:
    fall11 = tmp_path / "fall11"
    fall11.mkdir()
    gone = "n02370806"  # hoofed mammal, a 1512 root: always needed
    with tarfile.open(small_mirror / mirror.FALL11_DIR / imagenet.FALL11_WHOLE) as whole:
        for name in whole.getnames():
            if name != f"{gone}.tar":
                (fall11 / name).write_bytes(
                    whole.extractfile(name).read()
                )  # the per-synset tars, one missing
    params = full_params(
        small_mirror, "http://127.0.0.1:9", tmp_path, archives=[], imagenet_fall11_path=str(fall11)
    )
    message = _fails(params, dl.MissingInputsError)
    assert re.search(
        rf"1 of the \d+ fall 2011 synsets that 1000R / 1512 need are missing \({gone}; all"
        r" listed in",
        message,
    )
    assert (tmp_path / "downloads" / imagenet.MISSING_FALL11_LIST).read_text() == f"{gone}\n"
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_truncated_archive_on_the_mirror_is_caught_by_the_manifest(
    small_mirror: Path, server: ArchiveServer, tmp_path: Path, previous_raw: Path
) -> None:
    url = serve_mirror(
        server, small_mirror, _served_archive("voc2007_test") | _served_archive("lfw_funneled")
    )
    path = f"/{dl.ARCHIVES['voc2007_test'].mirror_path}"
    server.files[path] = server.files[path][
        : len(server.files[path]) // 2
    ]  # the mirror's copy is cut short
    message = _fails(
        full_params(small_mirror, url, tmp_path, archives=["voc2007_test", "lfw_funneled"]),
        dl.MissingInputsError,
    )
    assert "1 input(s) of the full profile are missing or bad" in message
    assert "voc2007_test (VOCtest_06-Nov-2007.tar)" in message and "SHA256SUMS says" in message
    assert (
        "The mirror serves a corrupt or truncated copy (rebuild it: `oquab-repro mirror build`)"
        in message
    )
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == [
        "lfw-funneled.tgz"
    ]  # the bad bytes were removed
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_truncated_archive_that_passes_its_checksum_fails_extraction(
    small_mirror: Path, server: ArchiveServer, tmp_path: Path, previous_raw: Path
) -> None:
    """A manifest regenerated over a cut file: the checksum passes, extraction must not."""
    url = serve_mirror(server, small_mirror, _served_archive("voc2007_test"))
    path = f"/{dl.ARCHIVES['voc2007_test'].mirror_path}"
    server.files[path] = server.files[path][: len(server.files[path]) // 2]
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"{hashlib.sha256(server.files[path]).hexdigest()}  {path[1:]}\n")
    params = full_params(
        small_mirror,
        url,
        tmp_path,
        archives=["voc2007_test"],
        mirror_manifest=str(manifest),
        imagenet_verify_md5=False,
    )
    message = _fails(params, dl.TruncatedArchiveError)
    assert (
        "VOCtest_06-Nov-2007.tar: corrupt or truncated archive" in message
        and "re-download" in message
    )
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_checksum_mismatch_of_a_file_placed_by_hand(
    small_mirror: Path, server: ArchiveServer, tmp_path: Path, previous_raw: Path
) -> None:
    url = serve_mirror(server, small_mirror, _served_archive("lfw_funneled"))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "lfw-funneled.tgz").write_bytes(b"not the archive")
    message = _fails(
        full_params(small_mirror, url, tmp_path, archives=["lfw_funneled"]), dl.MissingInputsError
    )
    assert (
        "lfw_funneled (lfw-funneled.tgz)" in message
        and "sha256 is " in message
        and "already in" in message
        and "the bad file was removed" in message
    )
    _assert_nothing_half_written(tmp_path, previous_raw)
    params = full_params(small_mirror, url, tmp_path, archives=["lfw_funneled"])
    assert nodes.build_raw_data("full", params, 0)[1]["sha256"][
        "lfw_funneled"
    ]  # the next run re-downloads and succeeds


def test_unreachable_mirror_names_every_archive(
    small_mirror: Path, tmp_path: Path, previous_raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(dl, "_sleep", waits.append)
    with socket.socket() as probe:  # a port nothing listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    message = _fails(full_params(small_mirror, url, tmp_path), dl.MissingInputsError)
    assert "9 input(s) of the full profile are missing or bad" in message
    for archive in dl.ARCHIVES.values():
        assert f"({archive.filename}): {url}/{archive.mirror_path}" in message
    assert message.count("unreachable after 3 attempts") == 1 and "kept" not in message
    assert waits == [1.0, 2.0] and "data.full.mirror" in message
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_full_disk_while_extracting_stops_cleanly(
    small_mirror: Path,
    server: ArchiveServer,
    tmp_path: Path,
    previous_raw: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = serve_mirror(server, small_mirror, _served_archive("voc2007_trainval"))
    written = {"bytes": 0}
    real = tarfile.TarFile.makefile

    def fill_up(self: tarfile.TarFile, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        written["bytes"] += tarinfo.size
        if written["bytes"] > 200_000:  # the disk fills up partway through the VOC archive
            raise OSError(errno.ENOSPC, "No space left on device", targetpath)
        real(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", fill_up)
    message = _fails(
        full_params(small_mirror, url, tmp_path, archives=["voc2007_trainval"]), dl.DiskFullError
    )
    assert (
        "disk full while extracting into" in message
        and "data.full.download_dir" in message
        and "data/01_raw was not changed" in message
    )
    _assert_nothing_half_written(tmp_path, previous_raw)
    assert (
        tmp_path / "downloads" / "VOCtrainval_06-Nov-2007.tar"
    ).is_file()  # the verified download is kept for the next run


def test_not_enough_space_is_said_before_extracting(
    small_mirror: Path,
    server: ArchiveServer,
    tmp_path: Path,
    previous_raw: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = serve_mirror(server, small_mirror, _served_archive("voc2007_test"))
    monkeypatch.setattr(
        dl.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    )
    message = _fails(
        full_params(small_mirror, url, tmp_path, archives=["voc2007_test"]), dl.DiskFullError
    )
    assert (
        "0.00 GB free, but extracting ImageNet and the archives needs about" in message
        and "nothing was extracted" in message
    )
    _assert_nothing_half_written(tmp_path, previous_raw)


def test_manifest_requires_a_mirror() -> None:
    full = {**_params()["full"], "mirror_manifest": "mirror/SHA256SUMS"}
    with pytest.raises(
        ValueError, match="a checksum manifest replaces the published checksums only for a mirror"
    ):
        _params(full=full)
    with pytest.raises(ValueError, match="http:// or https://"):
        _params(full={**full, "mirror": "ftp://example.org"})


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MB filesystem (tmpfs), where the platform lets us mount one (root on Linux)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(
            "cannot mount a tmpfs here (needs root); the monkeypatched full-disk tests cover the"
            " logic"
        )
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_really_full_disk_while_extracting(
    small_mirror: Path,
    server: ArchiveServer,
    tmp_path: Path,
    previous_raw: Path,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up for real (the free-space check is bypassed, as when
    another process fills it)."""
    url = serve_mirror(
        server,
        small_mirror,
        _served_archive("voc2007_trainval") | _served_archive("voc2012_trainval"),
    )
    monkeypatch.setattr(dl, "check_free_space", lambda *args: None)
    filler = small_disk / "other-process.bin"
    params = full_params(
        small_mirror,
        url,
        tmp_path,
        archives=["voc2007_trainval", "voc2012_trainval"],
        download_dir=str(small_disk),
    )
    downloads = sum(
        (small_mirror / dl.ARCHIVES[n].mirror_path).stat().st_size
        for n in ("voc2007_trainval", "voc2012_trainval")
    )
    filler.write_bytes(
        b"\0" * (6 * 2**20 - downloads - 300_000)
    )  # leaves room for the downloads, not for ImageNet + VOC
    message = _fails(params, dl.DiskFullError)
    assert (
        "disk full while extracting into" in message and "point data.full.download_dir" in message
    )
    assert sorted(p.name for p in small_disk.iterdir()) == [
        "VOCtrainval_06-Nov-2007.tar",
        "VOCtrainval_11-May-2012.tar",
        "other-process.bin",
    ]
    assert (
        not (tmp_path / "01_raw" / "imagenet").exists()
        and (previous_raw / "voc" / "previous.txt").read_text() == "complete"
    )
