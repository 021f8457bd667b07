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
from oquab_repro.params import PRETRAIN_SOURCES, TRANSFER_SOURCES

ROOT = Path(__file__).resolve().parents[1]
PATCHES = {
    "voc_year": "2007", "splits": ["train"], "scales": [1, 2, 4], "step_fraction": 0.5,
    "min_patch_fraction": 0.2, "min_object_fraction": 0.6, "background_fraction": 0.5,
}  # fmt: skip


def _voc(root: Path, objects: dict[str, list[tuple[str, list[int]]]], size: tuple[int, int]) -> Path:
    """A minimal Pascal VOC 2007 folder (JPEGImages, Annotations, ImageSets/Main/train.txt)."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    for image_id, objs in objects.items():
        Image.new("RGB", size, (90, 120, 150)).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><truncated>0</truncated>"
            f"<bndbox><xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
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
    root = _voc(tmp_path, {"000001": [("cat", [30, 30, 42, 42])], "000002": [("dog", [0, 0, 80, 60])]}, (80, 60))
    table, metrics, per_class = label_patches_node(root, PATCHES, seed=0)
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
    again, _, _ = label_patches_node(root, PATCHES, seed=0)
    pd.testing.assert_frame_equal(table, again)  # seeded background sample


def _scores(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((n, len(VOC_CLASSES))) < 0.3, 1, -1)
    labels[0] = 1  # every class has a positive
    scores = labels * 0.5 + rng.normal(size=labels.shape)
    frame = pd.DataFrame(scores, columns=[f"score_{c}" for c in VOC_CLASSES])
    for i, c in enumerate(VOC_CLASSES):
        frame[f"label_{c}"] = labels[:, i]
    return frame


def test_evaluate_and_report_tables() -> None:
    from oquab_repro.pipelines.transfer.nodes import VARIANT_ROWS, evaluate, report_tables

    metrics = {}
    for k, v in enumerate(VARIANT_ROWS):
        metrics[f"m_{v}"], table = evaluate(_scores(60, k), {"test_images": 60}, {"epochs": 1})
        assert set(table["class"]) == set(VOC_CLASSES)
        assert metrics[f"m_{v}"]["map_voc07"] == pytest.approx(table.ap_voc07.mean())
    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    t31, t32, summary, _ = report_tables(reference, **metrics)
    assert list(t31.columns) == ["row", "source", *VOC_CLASSES, "mAP"]
    assert len(t31) == 2 * len(VARIANT_ROWS)
    ours = t31[t31.source.str.startswith("ours")].set_index("row")
    assert ours.loc["NO PRETRAIN", "mAP"] == pytest.approx(100 * metrics["m_nopre"]["map_voc07"])
    thesis = t31[t31.source.str.startswith("thesis")].set_index("row")
    table31 = next(t for t in reference["tables"] if t["id"] == "3.1")
    pre1000c = next(r for r in table31["rows"] if r["label"] == "PRE-1000C")
    assert thesis.loc["PRE-1000C", "mAP"] == pre1000c["thesis"][0]
    assert summary["pretraining_helps"] == (summary["map_voc07"]["pre_in1512"] > summary["map_voc07"]["nopre"])
    assert set(t32.row) == set(VARIANT_ROWS.values())
    # per-class APs (%) for the report's Tables 3.1/3.2 (transfer:ap_<method>.<variant>.<class>)
    assert summary["ap_voc10"]["pre_in1000c"]["cow"] == pytest.approx(100 * metrics["m_pre_in1000c"]["ap_voc10"]["cow"])


def test_reference_rows_cover_every_variant() -> None:
    from oquab_repro.pipelines.transfer.nodes import VARIANT_ROWS

    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    tables = {t["id"]: t for t in reference["tables"]}
    for key in ("3.1", "3.2"):
        assert [r["label"] for r in tables[key]["rows"]] == list(VARIANT_ROWS.values())
        for row, variant in zip(tables[key]["rows"], VARIANT_ROWS, strict=True):
            assert row["ours"][0].endswith(f".{variant}")  # transfer:map_<method>.<variant>


def test_dvc_variants_match_the_code() -> None:
    from oquab_repro.pipelines.transfer.pipeline import GROUPS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["pretrain"]["foreach"] == list(PRETRAIN_SOURCES)
    for tag, variants in GROUPS.items():  # one stage per source network, tagged from_<source>
        stage = stages["transfer_nopre" if tag == "nopre" else f"transfer_{tag.removeprefix('from_')}"]
        assert stage["cmd"] == f"kedro run --pipelines transfer --tags {tag}"
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage["metrics"]]
        assert metrics == [f"data/08_reporting/transfer_{v}/metrics.json" for v in variants]
        if tag != "nopre":
            assert all(TRANSFER_SOURCES[v] == tag.removeprefix("from_") for v in variants)
            assert f"data/06_models/pretrain_{tag.removeprefix('from_')}/weights.pkl" in stage["deps"]
    assert sorted(v for vs in GROUPS.values() for v in vs) == sorted(["nopre", *TRANSFER_SOURCES])
    report_deps = stages["transfer_report"]["deps"]
    for v in ("nopre", *TRANSFER_SOURCES):
        assert f"data/08_reporting/transfer_{v}/metrics.json" in report_deps


def test_transfer_training_resumes_from_checkpoints(tmp_path: Path) -> None:
    """Frozen-prefix caching + checkpoints: a resumed transfer run ends with the same weights."""
    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
    from oquab_repro.pipelines.patches.nodes import label_patches_node
    from oquab_repro.pipelines.transfer.nodes import train_transfer

    objects = {f"{i:06d}": [("cat" if i % 2 else "dog", [8 + i, 10, 34 + i, 36])] for i in range(6)}
    root = _voc(tmp_path / "voc", objects, (64, 48))
    (root / "VOCdevkit/VOC2007/ImageSets/Main/val.txt").write_text("".join(f"{i}\n" for i in objects))
    patches_params = {**PATCHES, "splits": ["train", "val"]}
    table, _, _ = label_patches_node(root, patches_params, seed=0)
    conv = [{"channels": 4, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p} for p in (2, 2, 0, 0, 2)]
    net = {"input_size": 16, "conv": conv, "dropout": 0.5, "mean": [0.5] * 3, "std": [0.25] * 3}
    optim = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "lr_factor": 0.1, "patience": 1, "max_reductions": 3, "plateau_on": "train"}
    prof = {"hidden_dim": 8, "max_epochs": 4, "batch_size": 16, "num_workers": 0, "flip": False, "cache_crops": True, "torch_threads": 0, "heatmap_images": 1, "heatmap_classes": 1}
    variant = {"frozen": ["c1", "c2", "c3", "c4", "c5", "fc6", "fc7"], "adaptation_layers": 2}
    params = {
        "k": 5, "train_set": "train", "val_set": "val", "test_set": "val", "optim": optim,
        "nopre": {"fc_dim": 8, "frozen": [], "adaptation_layers": 2},
        "variants": dict.fromkeys(TRANSFER_SOURCES, variant), "mini": prof, "full": prof,
    }  # fmt: skip
    pretrain = {"mini": {"net": net, "fc_dim": dict.fromkeys(PRETRAIN_SOURCES, 8), "max_epochs": 1, "batch_size": 4,
                         "num_workers": 0, "crop_scale_min": 0.5, "flip": False, "cache_images": True, "torch_threads": 0}}  # fmt: skip
    pretrain["full"] = pretrain["mini"]
    torch.manual_seed(0)
    source = to_bundle(AlexNet(spec_from_params(16, conv, 8, 0.5), 5), list("abcde"), [0.5] * 3, [0.25] * 3)
    args = (params, patches_params, pretrain, "mini", 0, "cpu")
    ckpt = Checkpointer(tmp_path / "ckpt", keep=10)
    full, hist, metrics = train_transfer(root, table, source, ckpt, *args, variant="pre_in1512")
    assert metrics["frozen_prefix_layers"] == 7 and len(hist) == 4
    for epoch, path in ckpt._epochs():
        if epoch > 2:
            path.unlink()
    resumed, hist2, _ = train_transfer(root, table, source, ckpt, *args, variant="pre_in1512")
    for k, v in full["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k
    # the frozen trunk is exactly the source network's C1–FC7
    for k, v in source["state_dict"].items():
        if not k.startswith("fc8"):
            assert torch.equal(full["state_dict"][f"trunk.{k}"], v), k
