"""The rehearsal mirror: official layouts and annotation formats, a stable
manifest, a Range-capable server."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from oquab_repro import console
from oquab_repro.lib import download as dl
from oquab_repro.lib import imagenet, mirror
from oquab_repro.lib.mirror_counts import MirrorCounts

from .conftest import SMALL_MIRROR


def _archive(root: Path, name: str) -> Path:
    return root / dl.ARCHIVES[name].mirror_path


def _tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_every_official_archive_is_in_the_manifest(small_mirror: Path) -> None:
    listed = {
        line.split("  ", 1)[1] for line in (small_mirror / mirror.MANIFEST).read_text().splitlines()
    }
    assert {a.mirror_path for a in dl.ARCHIVES.values()} | {dl.TUEBINGEN.mirror_path} <= listed
    assert {f"ILSVRC2012/{n}" for n, _ in imagenet.ILSVRC_ARCHIVES.values()} <= listed
    assert {
        "fall11/fall11_whole.tar",
        "wordnet/fall11_wnids.txt",
        "wordnet/wordnet.is_a.txt",
    } <= listed
    assert mirror.check_manifest(small_mirror) == []


def test_voc_tars_have_the_devkit_layout_and_real_annotations(
    small_mirror: Path, tmp_path: Path
) -> None:
    names = set(_tar_names(_archive(small_mirror, "voc2007_trainval")))
    base = "VOCdevkit/VOC2007"
    for folder in (
        "Annotations",
        "JPEGImages",
        "ImageSets/Main",
        "ImageSets/Layout",
        "ImageSets/Segmentation",
        "SegmentationClass",
        "SegmentationObject",
    ):
        assert f"{base}/{folder}" in names
    assert {f"{base}/ImageSets/Main/{s}.txt" for s in ("train", "val", "trainval")} <= names
    assert f"{base}/ImageSets/Main/dog_trainval.txt" in names
    assert f"{base}/ImageSets/Main/test.txt" in set(
        _tar_names(_archive(small_mirror, "voc2007_test"))
    )
    with tarfile.open(_archive(small_mirror, "voc2007_trainval")) as tar:
        xmls = [
            ET.fromstring(tar.extractfile(n).read()) for n in sorted(names) if n.endswith(".xml")
        ]
        jpeg = tar.extractfile(next(n for n in sorted(names) if n.endswith(".jpg"))).read()
    objects = [o for x in xmls for o in x.iter("object")]
    assert len(objects) / len(xmls) > 1.5  # several objects per image
    assert {o.findtext("difficult") for o in objects} == {"0", "1"} and {
        o.findtext("truncated") for o in objects
    } == {"0", "1"}
    sizes = {(int(x.findtext("size/width")), int(x.findtext("size/height"))) for x in xmls}
    assert sizes <= set(mirror.VOC_SHAPES) and len(sizes) > 1
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


def test_voc2012_tar_has_the_action_set(small_mirror: Path) -> None:
    names = set(_tar_names(_archive(small_mirror, "voc2012_trainval")))
    action = "VOCdevkit/VOC2012/ImageSets/Action"
    assert {f"{action}/{s}.txt" for s in ("train", "val", "trainval")} <= names
    assert {
        f"{action}/{a}_train.txt" for a in mirror.VOC_ACTIONS_2012
    } <= names  # 10 actions + 'other'
    with tarfile.open(_archive(small_mirror, "voc2012_trainval")) as tar:
        ids = tar.extractfile(f"{action}/trainval.txt").read().decode().split()
        xmls = [
            ET.fromstring(tar.extractfile(f"VOCdevkit/VOC2012/Annotations/{i}.xml").read())
            for i in ids
        ]
        jumping = tar.extractfile(f"{action}/jumping_trainval.txt").read().decode().splitlines()
    persons = [o for x in xmls for o in x.iter("object")]
    assert all(
        p.findtext("name") == "person"
        and p.find("actions/other") is not None
        and p.find("point/x") is not None
        for p in persons
    )
    assert (
        len(jumping) == len(persons) > len(xmls)
    )  # one line per person (image id, person index, ±1), some images with several
    assert {line.split()[2] for line in jumping} <= {"1", "-1"}


def test_coco_zips_read_with_pycocotools(small_mirror: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(_archive(small_mirror, "coco2014_annotations")) as z:
        assert sorted(n for n in z.namelist() if not n.endswith("/")) == sorted(
            f"annotations/{kind}_{split}.json"
            for kind in ("instances", "captions", "person_keypoints")
            for split in ("train2014", "val2014")
        )
        z.extractall(tmp_path)
    with zipfile.ZipFile(_archive(small_mirror, "coco2014_train")) as z:
        images = [n for n in z.namelist() if n.endswith(".jpg")]
    assert all(
        n.startswith("train2014/COCO_train2014_")
        and len(Path(n).stem) == len("COCO_train2014_") + 12
        for n in images
    )
    coco = COCO(str(tmp_path / "annotations" / "instances_train2014.json"))
    assert (
        len(coco.getCatIds()) == 80 and max(coco.getCatIds()) == 90
    )  # the official non-contiguous ids
    anns = coco.loadAnns(coco.getAnnIds())
    assert {a["iscrowd"] for a in anns} == {0, 1}
    crowd = next(a for a in anns if a["iscrowd"])
    mask = coco.annToMask(crowd)
    assert mask.sum() == pytest.approx(crowd["area"], rel=0.02)
    assert (
        len(coco.getImgIds()) == SMALL_MIRROR["coco_train"] > len({a["image_id"] for a in anns})
    )  # some images without objects


def test_lfw_lsun_weights_and_tuebingen(small_mirror: Path, tmp_path: Path) -> None:
    names = _tar_names(_archive(small_mirror, "lfw_funneled"))
    jpgs = [n for n in names if n.endswith(".jpg")]
    assert all(
        n.startswith("lfw_funneled/") and Path(n).stem.startswith(Path(n).parent.name + "_")
        for n in jpgs
    )
    with tarfile.open(_archive(small_mirror, "lfw_funneled")) as tar:
        assert Image.open(tar.extractfile(jpgs[0])).size == (250, 250)
    with zipfile.ZipFile(_archive(small_mirror, "lsun_bedroom")) as z:
        assert sorted(n for n in z.namelist() if not n.endswith("/")) == [
            "bedroom_train_lmdb/data.mdb",
            "bedroom_train_lmdb/lock.mdb",
        ]
        z.extractall(tmp_path)
    import lmdb

    with (
        lmdb.open(str(tmp_path / "bedroom_train_lmdb"), readonly=True, lock=False) as env,
        env.begin() as txn,
    ):
        key, value = next(iter(txn.cursor()))
        image = Image.open(io.BytesIO(value))
        assert len(key) == 40 and image.format == "WEBP" and min(image.size) == 256
    assert (small_mirror / "dl.yf.io/lsun/scenes/bedroom_val_lmdb.zip").is_file()
    import torch
    from torchvision.models import resnet34

    state = torch.load(
        small_mirror / dl.ARCHIVES["resnet34_imagenet"].mirror_path, weights_only=True
    )
    resnet34().load_state_dict(state)
    with zipfile.ZipFile(small_mirror / dl.TUEBINGEN.mirror_path) as z:
        names = z.namelist()
        meta = z.read("pairmeta.txt").decode().splitlines()
    assert {"README", "pairmeta.txt", "pair0001.txt", "pair0001_des.txt"} <= set(
        names
    ) and "/" not in "".join(names)
    assert len(meta) == SMALL_MIRROR["tuebingen_pairs"] and meta[5].split()[1:5] in (
        ["3", "4", "1", "2"],
        ["1", "2", "3", "4"],
    )


def test_imagenet_archives_and_devkit(small_mirror: Path) -> None:
    base = small_mirror / mirror.ILSVRC_DIR
    words, val_wnids = imagenet.read_devkit(base / "ILSVRC2012_devkit_t12.tar.gz")
    assert (
        len(words) == SMALL_MIRROR["imagenet_classes"]
        and len(val_wnids) == SMALL_MIRROR["imagenet_classes"]
    )
    inner = _tar_names(base / "ILSVRC2012_img_train.tar")
    assert sorted(inner) == sorted(f"{w}.tar" for w in words)
    with (
        tarfile.open(base / "ILSVRC2012_img_train.tar") as tar,
        tarfile.open(fileobj=tar.extractfile(inner[0])) as one,
    ):
        assert all(
            n.startswith(Path(inner[0]).stem + "_") and n.endswith(".JPEG") for n in one.getnames()
        )
    assert _tar_names(base / "ILSVRC2012_img_val.tar")[0] == "ILSVRC2012_val_00000001.JPEG"
    quirks = set()
    drawn_first = mirror.synthetic_wordnet(MirrorCounts(**SMALL_MIRROR)).ilsvrc[
        1:4
    ]  # classes 1-3 carry the quirks
    with tarfile.open(base / "ILSVRC2012_img_train.tar") as tar:
        for wnid in drawn_first:
            with tarfile.open(fileobj=tar.extractfile(f"{wnid}.tar")) as one:
                for name in one.getnames():
                    image = Image.open(io.BytesIO(one.extractfile(name).read()))
                    quirks.add((image.format, image.mode))
    assert {("JPEG", "CMYK"), ("JPEG", "L"), ("PNG", "RGB")} <= quirks  # as real ILSVRC-2012 has


def test_build_is_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    counts = MirrorCounts(
        **{**SMALL_MIRROR, "imagenet_classes": 6, "fall11_subtree": 5, "fall11_other": 2}
    )
    for name, workers in (("a", 1), ("b", 2)):
        mirror.build_imagenet(
            tmp_path / name,
            MirrorCounts(**{**counts.__dict__, "workers": workers}),
            mirror.M.Digits.load(),
        )
        mirror.build_voc2007(tmp_path / name, counts, mirror.M.Digits.load())
        mirror.build_tuebingen(tmp_path / name, counts)

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


def test_manifest_check_finds_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.bin").write_bytes(b"a")
    mirror.write_manifest(tmp_path, [tmp_path / "x" / "a.bin"])
    assert mirror.check_manifest(tmp_path) == []
    (tmp_path / "x" / "a.bin").write_bytes(b"b")
    assert mirror.check_manifest(tmp_path) == ["x/a.bin"]


def test_server_answers_ranges_and_refuses_paths_outside(small_mirror: Path) -> None:
    server = mirror.make_server(small_mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        rel = dl.ARCHIVES["voc2007_test"].mirror_path
        data = (small_mirror / rel).read_bytes()
        request = urllib.request.Request(f"{url}/{rel}", headers={"Range": "bytes=100-"})
        with urllib.request.urlopen(request) as response:
            assert response.status == 206 and response.read() == data[100:]
            assert response.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"{url}/../../etc/passwd")
        dest = small_mirror.parent / "dl" / "v.tar"
        dl.download(f"{url}/{rel}", dest, f"sha256:{hashlib.sha256(data).hexdigest()}")
        assert dest.read_bytes() == data
    finally:
        server.shutdown()
        server.server_close()


def test_cli_serves_the_mirror_until_interrupted(small_mirror: Path) -> None:
    """README: `oquab-repro mirror serve DIR --port N &` serves the archives; Ctrl-C stops it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = str(Path(sys.executable).parent / "oquab-repro")
    server = subprocess.Popen(
        [cli, "mirror", "serve", str(small_mirror), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"Serving {small_mirror} at http://127.0.0.1:{port}" in server.stdout.readline()
        rel = dl.ARCHIVES["voc2007_test"].mirror_path
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{rel}") as response:  # noqa: S310
            assert response.read() == (small_mirror / rel).read_bytes()
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, server.stderr.read()
    finally:
        server.kill()
        server.wait()


def test_cli_builds_and_prints_the_rehearsal_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["mirror", "build", str(tmp_path / "m"), "--imagenet-classes", "3",
            "--fall11-subtree", "5", "--fall11-other", "0", "--voc2007-trainval", "2",
            "--voc2007-test", "1", "--voc2012-trainval", "2", "--voc2012-actions", "2",
            "--coco-train", "2", "--coco-val", "1", "--lfw-people", "1", "--lsun-train", "1",
            "--lsun-val", "1", "--tuebingen-pairs", "2"]  # fmt: skip
    assert console.main(args) == 0
    out = capsys.readouterr().out
    assert (
        "dvc exp run -S profile=full -S data.full.mirror=http://127.0.0.1:8765" in out
        and "SHA256SUMS" in out
    )
    assert console.main(["mirror", "check", str(tmp_path / "m")]) == 0
    assert (
        console.main(args) == 2 and "not empty" in capsys.readouterr().err
    )  # never writes over an existing mirror
    assert (
        console.main([*args[:2], str(tmp_path / "n"), "--fall11-images", "1"]) == 2
        and "at least 2" in capsys.readouterr().err
    )


def test_counts_are_validated() -> None:
    with pytest.raises(ValueError, match="imagenet_classes = 0: must be positive"):
        MirrorCounts(imagenet_classes=0)
    assert json.dumps(
        mirror.params_for(Path("/m"), "http://127.0.0.1:1")
    )  # plain strings, ready for -S
    assert (
        np.isclose(sum(mirror._subtree_sizes(512).values()), 512)
        and mirror._subtree_sizes(512)["n02370806"] == 276
    )
