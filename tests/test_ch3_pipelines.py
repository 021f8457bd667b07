"""Chapter 3 stages: the patches node on a tiny VOC folder, evaluation and report tables, and the
agreement between the variant lists in code and dvc.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from oquab_repro.lib.datasets import VOC_CLASSES
from oquab_repro.params import PRETRAIN_SOURCES, read_params_file, validate_params
from tests import tiny_params as tiny

ROOT = Path(__file__).resolve().parents[1]
PATCHES = {
    "voc_year": "2007", "splits": ["train"], "scales": [1, 2, 4], "step_fraction": 0.5,
    "min_patch_fraction": 0.2, "min_object_fraction": 0.6, "background_fraction": 0.5,
}  # fmt: skip


def _voc(
    root: Path, objects: dict[str, list[tuple[str, list[int]]]], size: tuple[int, int]
) -> Path:
    """A minimal Pascal VOC 2007 folder (JPEGImages, Annotations, ImageSets/Main/train.txt)."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    for image_id, objs in objects.items():
        Image.new("RGB", size, (90, 120, 150)).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><truncated>0</truncated>"
            f"<bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for name, b in objs
        )
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>3</depth></size>{xml}</annotation>"
        )
    (base / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in objects))
    return root


def test_patches_node_labels_a_tiny_voc_folder(tmp_path: Path) -> None:
    from oquab_repro.pipelines.patches.nodes import label_patches_node

    # 80×60 image: at λ=4 patches are 15 px; a 12×12 "cat" fills most of one of them
    root = _voc(
        tmp_path,
        {"000001": [("cat", [30, 30, 42, 42])], "000002": [("dog", [0, 0, 80, 60])]},
        (80, 60),
    )
    table, metrics, per_class, _ = label_patches_node(root, PATCHES, seed=0, skip_corrupt=False)
    assert metrics["images"] == 2 and metrics["min_grid_overlap"] >= 0.5
    cats = table[(table.image_id == "000001") & (table.label == 1 + VOC_CLASSES.index("cat"))]
    assert len(cats) > 0
    for r in cats.itertuples():  # every positive satisfies both area clauses
        ix = max(0, min(r.x1, 42) - max(r.x0, 30)) * max(0, min(r.y1, 42) - max(r.y0, 30))
        assert ix >= 0.2 * (r.x1 - r.x0) ** 2 - 1e-3 and ix >= 0.6 * 144 - 1e-3
    # the dog covers the whole image: only the λ=1 patches (60×60 of 80×60) reach 0.6 |B|
    dogs = table[(table.image_id == "000002") & (table.label > 0)]
    assert set(dogs.scale) == {0}
    assert per_class.set_index("label").loc["cat", "train_patches"] == len(cats)
    again, _, _, _ = label_patches_node(root, PATCHES, seed=0, skip_corrupt=False)
    pd.testing.assert_frame_equal(table, again)  # seeded background sample


def test_patches_honour_skip_corrupt_and_count_the_skipped_file(tmp_path: Path) -> None:
    """data.skip_corrupt: false stops naming the file; true leaves it out (not labelled twice
    in its neighbour's place) and names it in the metrics."""
    from oquab_repro.lib.datasets import DataError
    from oquab_repro.pipelines.patches.nodes import label_patches_node

    boxes = {f"00000{i}": [("cat", [30, 30, 42, 42])] for i in range(1, 4)}
    root = _voc(tmp_path, boxes, (80, 60))
    bad = root / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000002.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=r"000002\.jpg: unreadable image.*skip_corrupt"):
        label_patches_node(root, PATCHES, seed=0, skip_corrupt=False)
    table, metrics, _, _ = label_patches_node(root, PATCHES, seed=0, skip_corrupt=True)
    assert metrics["skipped_images"] == 1 and metrics["skipped_first"] == ["000002.jpg"]
    assert metrics["images"] == 2 and set(table.image_id) == {"000001", "000003"}


def _scores(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((n, len(VOC_CLASSES))) < 0.3, 1, -1)
    labels[0] = 1  # every class has a positive
    scores = labels * 0.5 + rng.normal(size=labels.shape)
    frame = pd.DataFrame(scores, columns=[f"score_{c}" for c in VOC_CLASSES])
    for i, c in enumerate(VOC_CLASSES):
        frame[f"label_{c}"] = labels[:, i]
    return frame


def _variants() -> dict[str, dict]:
    return read_params_file(ROOT / "params.yaml")["transfer"]["variants"]


def test_evaluate_and_report_tables() -> None:
    from oquab_repro.pipelines.transfer.nodes import evaluate, report_tables

    variants, metrics = _variants(), []
    for k, v in enumerate(variants):
        scores = pd.concat(
            [_scores(60, k).assign(variant=v), _scores(60, k + 100).assign(variant="other")]
        )
        m, table = evaluate(scores, {"test_images": 60}, {"epochs": 1}, variant=v)
        assert set(table["class"]) == set(VOC_CLASSES)
        assert m["map_voc07"] == pytest.approx(table.ap_voc07.mean())
        assert (
            m
            == evaluate(
                _scores(60, k).assign(variant=v), {"test_images": 60}, {"epochs": 1}, variant=v
            )[0]
        )
        metrics.append(m)
    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    t31, t32, summary, _ = report_tables(reference, variants, *metrics)
    assert list(t31.columns) == ["row", "source", *VOC_CLASSES, "mAP"]
    assert len(t31) == 2 * len(variants)
    ours = t31[t31.source.str.startswith("ours")].set_index("row")
    assert ours.loc["NO PRETRAIN", "mAP"] == pytest.approx(100 * metrics[0]["map_voc07"])
    thesis = t31[t31.source.str.startswith("thesis")].set_index("row")
    table31 = next(t for t in reference["tables"] if t["id"] == "3.1")
    pre1000c = next(r for r in table31["rows"] if r["label"] == "PRE-1000C")
    assert thesis.loc["PRE-1000C", "mAP"] == pre1000c["thesis"][0]
    maps = summary["map_voc07"]
    assert summary["pretraining_gain_voc07"]["pre_in1512"] == pytest.approx(
        maps["pre_in1512"] - maps["nopre"]
    )
    assert summary["pretraining_helps"]["pre_in1512"] == (maps["pre_in1512"] > maps["nopre"])
    assert "nopre" not in summary["pretraining_gain_voc07"]
    assert summary["best_pretrained_map_voc07"] == max(v for k, v in maps.items() if k != "nopre")
    assert list(t32.row.unique()) == [r["label"] for r in table31["rows"]]
    # per-class APs (%) for the report's Tables 3.1/3.2 (transfer:ap_<method>.<variant>.<class>)
    assert summary["ap_voc10"]["pre_in1000c"]["cow"] == pytest.approx(
        100 * metrics[1]["ap_voc10"]["cow"]
    )


def test_a_variant_without_a_thesis_row_is_labelled_by_its_name() -> None:
    from oquab_repro.lib.thesis import row_labels

    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    assert row_labels(reference, "3.1", ["nopre", "pre_in1000c", "pre_in1512_new"]) == {
        "nopre": "NO PRETRAIN",
        "pre_in1000c": "PRE-1000C",
        "pre_in1512_new": "pre_in1512_new",
    }


def test_reference_rows_cover_every_variant() -> None:
    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    tables = {t["id"]: t for t in reference["tables"]}
    for key in ("3.1", "3.2"):
        assert [r["ours"][0].rsplit(".", 1)[-1] for r in tables[key]["rows"]] == list(_variants())


def test_one_transfer_stage_per_source_network() -> None:
    """transfer.variants says each variant's source; dvc.yaml has one stage per source, which
    depends on that source's pretrained weights (none for NO PRETRAIN) and writes its variants."""
    params = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["pretrain"]["foreach"] == list(PRETRAIN_SOURCES)
    sources = params.transfer.sources()
    assert sources["none"] == ["nopre"] and sources["in1512"][:2] == ["pre_in1512", "pre_in1512u"]
    for source, variants in sources.items():
        stage = stages[f"transfer_{source}"]
        assert stage["cmd"] == f"kedro run --pipelines transfer --tags {source}"
        metrics = [next(iter(m)) for m in stage["metrics"]]
        assert sorted(metrics) == sorted(
            f"data/08_reporting/transfer_{v}/metrics.json" for v in variants
        )
        weights = [d for d in stage["deps"] if d.startswith("data/06_models/pretrain_")]
        assert weights == (
            [] if source == "none" else [f"data/06_models/pretrain_{source}/weights.safetensors"]
        )


def _transfer_setup(tmp_path: Path, images: int, epochs: int) -> tuple[Path, pd.DataFrame, tuple]:
    """A tiny VOC folder with labelled train/val patches, and the params of a tiny transfer run
    (variants nopre and pre_in1512): the node's arguments after the checkpointer."""
    from oquab_repro.pipelines.patches.nodes import label_patches_node

    objects = {
        f"{i:06d}": [("cat" if i % 2 else "dog", [8 + i, 10, 34 + i, 36])] for i in range(images)
    }
    root = _voc(tmp_path / "voc", objects, (64, 48))
    (root / "VOCdevkit/VOC2007/ImageSets/Main/val.txt").write_text(
        "".join(f"{i}\n" for i in objects)
    )
    patches_params = {**PATCHES, "splits": ["train", "val"]}
    table, _, _, _ = label_patches_node(root, patches_params, seed=0, skip_corrupt=False)
    params = tiny.transfer(
        ["nopre", "pre_in1512"], epochs, flip=False, scratch_fc_dim=6, test_set="val"
    )
    pretrain = tiny.pretrain(dropout=0.5)
    return root, table, (params, patches_params, pretrain, "mini", 0, "cpu", False, None, None)


CONV = tiny.CONV


def test_transfer_training_resumes_from_checkpoints(tmp_path: Path) -> None:
    """Frozen-prefix caching + checkpoints: a resumed transfer run ends with the same weights."""
    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
    from oquab_repro.pipelines.transfer.nodes import train_transfer

    root, table, args = _transfer_setup(tmp_path, images=6, epochs=4)
    torch.manual_seed(0)
    source = to_bundle(
        AlexNet(spec_from_params(16, CONV, 8, 0.5), 5), list("abcde"), [0.5] * 3, [0.25] * 3
    )
    ckpt = Checkpointer(tmp_path / "ckpt", keep=10)
    full, hist, metrics, _ = train_transfer(root, table, ckpt, *args, source, variant="pre_in1512")
    assert metrics["frozen_prefix_layers"] == 7 and len(hist) == 4
    for epoch, path in ckpt._epochs():
        if epoch > 2:
            path.unlink()
    resumed, hist2, _, _ = train_transfer(root, table, ckpt, *args, source, variant="pre_in1512")
    for k, v in full["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    # the frozen trunk is exactly the source network's C1–FC7
    for k, v in source["state_dict"].items():
        if not k.startswith("fc8"):
            assert torch.equal(full["state_dict"][f"trunk.{k}"], v), k


def test_no_pretrain_is_a_variant_whose_source_is_none(tmp_path: Path) -> None:
    """The same node trains NO PRETRAIN: no source bundle, every layer random and trained."""
    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.pipelines.transfer.nodes import train_transfer

    root, table, args = _transfer_setup(tmp_path, images=4, epochs=1)
    bundle, _, stats, _ = train_transfer(
        root, table, Checkpointer(tmp_path / "ck"), *args, variant="nopre"
    )
    assert bundle["spec"]["fc_dim"] == 6 and bundle["mean"] == [0.5] * 3
    assert stats["frozen_prefix_layers"] == 0 and stats["trainable_parameters"] > 0
