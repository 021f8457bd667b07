"""The loader layer on a small mini build: boxes round-trip against the XML, VOC
≡ COCO, bad input errors."""

from __future__ import annotations

import hashlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from oquab_repro.lib import datasets as D
from oquab_repro.lib import minidata
from oquab_repro.params import GAN_DATASETS, MiniDataParams

SMALL = {
    "pool_fractions": [0.6, 0.2, 0.2],
    "source_train_per_class": 2,
    "source_val_per_class": 1,
    "source_size": 32,
    "voc_trainval": 24,
    "voc_test": 12,
    "voc_size_min": 96,
    "voc_size_max": 128,
    "max_objects": 5,
    "max_distractors": 3,
    "object_min": 10,
    "object_max_fraction": 0.6,
    "max_overlap": 0.3,
    "difficult_below": 14,
    "action_trainval": 8,
    "gan_images": 12,
    "gan_size": 32,
    "workers": 1,
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    minidata.build_mini(root, MiniDataParams.model_validate(SMALL), seed=3)
    return root


def _xml_objects(xml: Path) -> tuple[tuple[int, int], list[tuple[str, list[float], int, int]]]:
    """Independent reading of a VOC annotation with ElementTree (not torchvision's parser)."""
    root = ET.parse(xml).getroot()
    size = (int(root.findtext("size/height")), int(root.findtext("size/width")))
    objects = []
    for obj in root.iter("object"):
        box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append(
            (
                obj.findtext("name"),
                box,
                int(obj.findtext("difficult")),
                int(obj.findtext("truncated")),
            )
        )
    return size, objects


def test_voc_boxes_round_trip_against_xml(mini: Path) -> None:
    ds = D.voc_detection(mini / "voc", "2007", "trainval")
    assert len(ds) == SMALL["voc_trainval"]
    for i in range(len(ds)):
        image, target = ds[i]
        size, objects = _xml_objects(ds.annotation_path(i))
        assert (image.height, image.width) == size == tuple(target["boxes"].canvas_size)
        expected = torch.tensor([[b[0] - 1, b[1] - 1, b[2], b[3]] for _, b, _, _ in objects])
        assert torch.equal(target["boxes"].as_subclass(torch.Tensor), expected)
        assert [D.VOC_LABELS[k] for k in target["labels"]] == [n for n, _, _, _ in objects]
        assert target["difficult"].tolist() == [bool(d) for _, _, d, _ in objects]
        assert target["truncated"].tolist() == [bool(t) for _, _, _, t in objects]


def test_painted_box_is_the_visible_object_extent() -> None:
    """The generator's box is the tight extent of opaque pixels, clipped at the image border."""
    canvas = np.zeros((20, 30, 3), dtype=np.float32)
    alpha = np.zeros((6, 8), dtype=np.float32)
    alpha[1:5, 2:7] = 1.0
    assert minidata._paint(canvas, alpha, np.array([255.0, 0, 0]), 10, 3) == (12, 4, 16, 7)
    assert canvas[4:8, 12:17, 0].min() == 255 and canvas[..., 0].sum() == 255 * 20
    assert minidata._paint(canvas, alpha, np.array([0, 255.0, 0]), 25, -2) == (
        27,
        0,
        29,
        2,
    )  # truncated


def test_mini_target_is_a_cluttered_multi_class_scene_set(mini: Path) -> None:
    ds = D.voc_detection(mini / "voc", "2007", "trainval")
    targets = [ds[i][1] for i in range(len(ds))]
    labels = torch.cat([t["labels"] for t in targets])
    sides = torch.cat([(t["boxes"][:, 2:] - t["boxes"][:, :2]).max(dim=1).values for t in targets])
    assert len(labels.unique()) >= 10
    assert len(labels) / len(targets) > 1.5  # several objects per image
    assert sides.max() / sides.min() > 3  # varied scales
    assert any(t["difficult"].any() for t in targets) and any(t["truncated"].any() for t in targets)


def test_coco_copy_gives_the_same_targets(mini: Path) -> None:
    voc = D.voc_detection(mini / "voc", "2007", "test")
    coco = D.coco_detection(
        mini / "coco" / "val2014", mini / "coco" / "annotations" / "instances_val2014.json"
    )
    assert len(coco) == len(voc)
    assert [coco.categories[k] for k in sorted(coco.categories)] == list(D.VOC_CLASSES)
    for i in range(len(voc)):
        _, tv = voc[i]
        _, tc = coco[i]
        assert tc["image_id"] == int(tv["image_id"])
        assert torch.equal(
            tc["boxes"].as_subclass(torch.Tensor), tv["boxes"].as_subclass(torch.Tensor)
        )
        assert torch.equal(tc["labels"], tv["labels"])


def test_v2_transforms_move_boxes_with_the_image(mini: Path) -> None:
    plain = D.voc_detection(mini / "voc", "2007", "train")
    flipped = D.voc_detection(
        mini / "voc", "2007", "train", transforms=v2.RandomHorizontalFlip(p=1.0)
    )
    image, target = plain[0]
    _, target_f = flipped[0]
    w = image.width
    box, box_f = (
        target["boxes"].as_subclass(torch.Tensor),
        target_f["boxes"].as_subclass(torch.Tensor),
    )
    assert torch.allclose(box_f[:, 0], w - box[:, 2]) and torch.allclose(box_f[:, 2], w - box[:, 0])


def test_image_sets_and_per_class_files_agree(mini: Path) -> None:
    main = mini / "voc" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    train, val = (main / "train.txt").read_text().split(), (main / "val.txt").read_text().split()
    assert sorted(train + val) == sorted((main / "trainval.txt").read_text().split())
    ds = D.voc_detection(mini / "voc", "2007", "val")
    for cls in ("aeroplane", "dog"):
        flags = dict(line.split() for line in (main / f"{cls}_val.txt").read_text().splitlines())
        for i in range(len(ds)):
            _, t = ds[i]
            present = [
                not d
                for lab, d in zip(t["labels"].tolist(), t["difficult"].tolist(), strict=True)
                if D.VOC_LABELS[lab] == cls
            ]
            expected = "-1" if not present else ("1" if any(present) else "0")
            assert flags[t["image_id"]] == expected


def test_imagenet_folder_and_class_subsets(mini: Path) -> None:
    train = D.imagenet_folder(mini / "imagenet", "train")
    assert len(train.classes) == len(minidata.SOURCE_TYPES) > len(D.VOC_CLASSES)
    assert len(train) == SMALL["source_train_per_class"] * len(train.classes)
    sets = minidata.class_sets(seed=0)
    sub = D.imagenet_folder(mini / "imagenet", "val", classes=sets["in1512"])
    assert sub.classes == sets["in1512"] and len(sub) == len(sets["in1512"])
    image, label = sub[0]
    assert image.size == (32, 32) and label == 0
    assert set(sets["in1000c"]) < set(sets["in1512"]) and len(sets["in1000r"]) == len(
        sets["in1000c"]
    )


def test_gan_images_are_square_tensors_in_minus_one_one(mini: Path) -> None:
    for name in GAN_DATASETS:
        ds = D.gan_images(name, mini / "gan" / name, 16)
        x = ds[0]
        assert len(ds) == SMALL["gan_images"] and x.shape == (3, 16, 16)
        assert x.min() >= -1 and x.max() <= 1 and x.min() < 0 < x.max()


def test_a_gan_set_is_drawn_by_its_declared_kind_and_an_unknown_one_is_an_error(
    tmp_path: Path,
) -> None:
    assert set(minidata.GAN_DRAWERS) >= set(GAN_DATASETS.values())
    cfg = MiniDataParams.model_validate(SMALL)
    digits = minidata.Digits.load()
    with pytest.raises(
        ValueError, match="unknown GAN image set 'celeba': declare it in params.GAN_DATASETS"
    ):
        minidata.build_gan(tmp_path / "celeba", "celeba", digits, 0, 2, 16, cfg)


def test_voc_actions_one_sample_per_person(mini: Path) -> None:
    ds = D.voc_actions(mini / "voc", "trainval")
    _, target = ds[0]
    assert target["actions"].sum() == 1 and target["boxes"].shape == (1, 4)
    folder = mini / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Action"
    jumping = (folder / "jumping_trainval.txt").read_text().splitlines()
    assert len(jumping) == len(ds)


def test_mini_build_is_deterministic(tmp_path: Path) -> None:
    cfg = MiniDataParams.model_validate({**SMALL, "source_train_per_class": 1, "gan_images": 2})

    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
        return h.hexdigest()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    minidata.build_mini(tmp_path / "a", cfg, seed=5)
    minidata.build_mini(tmp_path / "b", cfg.model_copy(update={"workers": 2}), seed=5)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")


# ------------------------------------------------------------------------------ bad input


@pytest.fixture()
def voc_copy(mini: Path, tmp_path: Path) -> Path:
    shutil.copytree(mini / "voc", tmp_path / "voc")
    return tmp_path / "voc"


def test_missing_root_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match=r"nowhere.*dvc repro data"):
        D.voc_detection(tmp_path / "nowhere")
    with pytest.raises(D.DataError, match="nowhere"):
        D.imagenet_folder(tmp_path / "nowhere", "train")
    with pytest.raises(D.DataError, match="instances"):
        D.coco_detection(tmp_path, tmp_path / "instances.json")


def test_xml_without_size_is_named(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(2)
    tree = ET.parse(xml)
    tree.getroot().remove(tree.getroot().find("size"))
    tree.write(xml)
    with pytest.raises(D.DataError, match=rf"{xml.name}: no <size>"):
        ds[2]


def test_unknown_class_is_named(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(1)
    xml.write_text(
        xml.read_text().replace(
            f"<name>{ET.parse(xml).getroot().findtext('object/name')}</name>",
            "<name>unicorn</name>",
            1,
        )
    )
    with pytest.raises(D.DataError, match=rf"{xml.name}: class 'unicorn' is not in the label map"):
        ds[1]


def test_empty_image_set_is_named(voc_copy: Path) -> None:
    split = voc_copy / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "val.txt"
    split.write_text("")
    with pytest.raises(D.DataError, match=r"val.txt: empty image set"):
        D.voc_detection(voc_copy, "2007", "val")


def test_corrupt_jpeg_raises_or_is_skipped_and_counted(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    bad = Path(ds._path(3))
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(D.DataError, match=rf"{bad.name}: unreadable image.*skip_corrupt"):
        ds[3]
    tolerant = D.voc_detection(voc_copy, "2007", "trainval", skip_corrupt=True)
    _, target = tolerant[3]
    assert target["image_id"] == Path(ds._path(4)).stem and tolerant.skipped == {3}


def test_corrupt_image_in_folder_is_skipped_and_counted(mini: Path, tmp_path: Path) -> None:
    shutil.copytree(mini / "gan" / "lfw", tmp_path / "lfw")
    first = sorted((tmp_path / "lfw").rglob("*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:40])  # truncated JPEG
    ds = D.gan_images("lfw", tmp_path / "lfw", 16, skip_corrupt=True)
    assert [ds[i].shape for i in range(len(ds))] and len(ds.skipped) == 1
    with pytest.raises(D.DataError, match=first.name):
        strict = D.gan_images("lfw", tmp_path / "lfw", 16)
        [strict[i] for i in range(len(strict))]


def test_missing_imagenet_classes_are_listed(mini: Path) -> None:
    with pytest.raises(D.DataError, match=r"1 requested class folders missing \(n99999999\)"):
        D.imagenet_folder(
            mini / "imagenet", "val", classes=["n99999999", minidata.SOURCE_TYPES[0].wnid]
        )


def test_lsun_lmdb_is_read_with_torchvision(
    mini: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full profile's LSUN format: ``<root>/bedroom_train_lmdb``
    holding encoded images by key."""
    lmdb = pytest.importorskip("lmdb")
    root = tmp_path / "lsun_bedroom"
    jpegs = sorted((mini / "gan" / "lsun_bedroom").rglob("*.jpg"))[:5]
    root.mkdir()
    env = lmdb.open(str(root / "bedroom_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for path in jpegs:
            txn.put(path.stem.encode(), path.read_bytes())
    env.close()
    monkeypatch.chdir(tmp_path)
    ds = D.gan_images("lsun_bedroom", root, 16)
    assert len(ds) == 5 and ds[4].shape == (3, 16, 16) and -1 <= ds[4].min() < ds[4].max() <= 1
    assert not list(tmp_path.glob("_cache_*")) and list(
        root.glob("_cache_*")
    )  # key cache kept in the set


# ------------------------------------------------------------------------- precise blame (issue 14)


def _edit_first(xml: Path, tag: str, value: str) -> str:
    """Replace the first ``<tag>…</tag>`` of an annotation; return the old text."""
    tree = ET.parse(xml)
    node = tree.getroot().find(f".//{tag}")
    old = node.text
    node.text = value
    tree.write(xml)
    return old


def test_non_numeric_size_is_an_annotation_error_naming_the_field(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval", skip_corrupt=True)
    xml = ds.annotation_path(2)
    _edit_first(xml, "size/width", "abc")
    with pytest.raises(
        D.DataError,
        match=rf"{xml.name}: <size><width> is 'abc', not a whole number; fix the annotation",
    ):
        ds[2]
    assert ds.skipped == set()  # never mistaken for (and skipped as) a corrupt JPEG


def test_non_numeric_box_field_is_named(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(0)
    name = ET.parse(xml).getroot().findtext("object/name")
    _edit_first(xml, "object/bndbox/ymin", "12px")
    with pytest.raises(
        D.DataError,
        match=rf"{xml.name}: <object> 1 \('{name}'\) <bndbox><ymin> is '12px', not a number",
    ):
        ds[0]


def test_box_past_the_image_is_clipped_and_counted(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(1)
    _edit_first(xml, "object/bndbox/xmax", "9999")
    image, target = ds[1]
    assert target["boxes"][0, 2].item() == image.width  # clipped to the image, not 9999
    ds[1]
    assert ds.clipped_boxes == 1 and ds.clipped == {
        1: 1
    }  # counted once per image, however often loaded


def test_box_outside_the_image_is_rejected(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(1)
    _edit_first(xml, "object/bndbox/xmin", "9990")
    _edit_first(xml, "object/bndbox/xmax", "9999")
    with pytest.raises(
        D.DataError,
        match=(
            rf"{xml.name}: <object> 1 .* box \(xmin 9990, .*\) is empty or lies outside the \d+×\d+"
            r" image"
        ),
    ):
        ds[1]


def test_decimal_coordinates_are_read(voc_copy: Path) -> None:
    """Some official VOC2012 annotations write coordinates with decimals."""
    ds = D.voc_detection(voc_copy, "2007", "trainval")
    xml = ds.annotation_path(0)
    old = ET.parse(xml).getroot().findtext("object/bndbox/xmin")
    _edit_first(xml, "object/bndbox/xmin", f"{old}.5")
    assert ds[0][1]["boxes"][0, 0].item() == float(old) - 0.5


def test_broken_xml_is_not_blamed_on_the_image(voc_copy: Path) -> None:
    ds = D.voc_detection(voc_copy, "2007", "trainval", skip_corrupt=True)
    xml = ds.annotation_path(4)
    xml.write_text(xml.read_text()[:-40])
    with pytest.raises(D.DataError, match=rf"{xml.name}: not valid XML"):
        ds[4]


def test_action_annotation_errors_name_the_field(voc_copy: Path) -> None:
    ds = D.voc_actions(voc_copy, "trainval")
    path, xml = ds.samples[0][0], ds.samples[0][1]
    _edit_first(xml, "object/actions/jumping", "yes")
    fresh = D.voc_actions(voc_copy, "trainval")
    with pytest.raises(
        D.DataError,
        match=rf"{xml.name}: <object> 1 \('person'\) <actions><jumping> is 'yes', not a number",
    ):
        fresh[0]
    _edit_first(xml, "size/height", "tall")
    with pytest.raises(
        D.DataError, match=rf"{xml.name}: <size><height> is 'tall', not a whole number"
    ):
        D.voc_actions(voc_copy, "trainval")
    assert path.is_file()


def test_coco_box_past_the_image_is_clipped_and_counted(mini: Path, tmp_path: Path) -> None:
    import json

    doc = json.loads((mini / "coco" / "annotations" / "instances_val2014.json").read_text())
    first = doc["annotations"][0]
    image = next(i for i in doc["images"] if i["id"] == first["image_id"])
    first["bbox"][2] = image["width"] * 3  # runs far past the right border
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    ds = D.coco_detection(mini / "coco" / "val2014", tmp_path / "instances.json")
    index = ds.coco._dataset.ids.index(first["image_id"])
    _, target = ds[index]
    assert target["boxes"][:, 2].max().item() <= image["width"] and ds.clipped_boxes == 1
