"""Table 3.3 action stage: square person patches with mirror padding, the label vector, and one
small end-to-end run of the training and evaluation nodes on a hand-made VOC2012 action folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from oquab_repro.lib.datasets import VOC_ACTIONS
from oquab_repro.lib.patches import mirror_crop, square_around
from tests import tiny_params as tiny

ROOT = Path(__file__).resolve().parents[1]


def test_square_is_centred_on_the_box_with_the_longer_side() -> None:
    assert square_around([10, 20, 30, 60], 1.0) == (
        0,
        20,
        40,
    )  # 20×40 box → 40-px square, same centre
    assert square_around([10, 20, 30, 60], 1.5) == (-10, 10, 60)
    with pytest.raises(ValueError, match="empty box"):
        square_around([5, 5, 5, 9], 1.0)


def test_mirror_crop_matches_numpy_reflect_padding() -> None:
    image = torch.arange(3 * 5 * 7, dtype=torch.uint8).reshape(
        3, 5, 7
    )  # C × H × W, distinct values
    ref = np.pad(
        image.numpy(), ((0, 0), (4, 4), (6, 6)), mode="reflect"
    )  # wider than the image: repeated mirroring
    for left, top, side in [(1, 1, 3), (-2, -1, 4), (4, 2, 5), (-6, -4, 13), (2, 3, 6)]:
        crop = mirror_crop(image, left, top, side)
        assert crop.shape == (3, side, side)
        expected = ref[:, top + 4 : top + 4 + side, left + 6 : left + 6 + side]
        np.testing.assert_array_equal(crop.numpy(), expected.astype(np.float32))
    # inside the image: a plain crop; at the border: the row just inside is mirrored, not repeated
    np.testing.assert_array_equal(
        mirror_crop(image, 1, 1, 3).numpy(), image[:, 1:4, 1:4].float().numpy()
    )
    edge = mirror_crop(image, -1, 0, 2)
    assert torch.equal(edge[:, :, 0], image[:, :2, 1].float()) and torch.equal(
        edge[:, :, 1], image[:, :2, 0].float()
    )


def _action_voc(
    root: Path, persons: dict[str, list[tuple[list[int], list[str]]]], split: str
) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Action"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, objs in persons.items():
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"{image_id}.jpg"
        )
        xml = "".join(
            "<object><name>person</name><bndbox>"
            f"<xmin>{b[0] + 1}</xmin><ymin>{b[1] + 1}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><actions>"
            + "".join(f"<{a}>{int(a in acts)}</{a}>" for a in VOC_ACTIONS)
            + "</actions></object>"
            for b, acts in objs
        )
        (base / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>{xml}</annotation>"
        )
    with (base / "ImageSets" / "Action" / f"{split}.txt").open("a") as handle:
        handle.write("".join(f"{i}\n" for i in persons))
    return root


def test_person_crops_label_vector_and_training_targets(tmp_path: Path) -> None:
    from oquab_repro.pipelines.actions.nodes import person_crops, training_targets

    root = _action_voc(
        tmp_path,
        {
            "a": [([0, 0, 20, 40], ["jumping"]), ([30, 10, 50, 30], ["phoning", "reading"])],
            "b": [([10, 10, 30, 30], [])],
        },
        "train",
    )
    out = person_crops(root, "train", 1.0, 16, False)
    assert out["crops"].shape == (3, 3, 16, 16) and out["image_ids"] == ["a", "a", "b"]
    expected = -np.ones((3, len(VOC_ACTIONS)), dtype=np.int8)
    expected[0, VOC_ACTIONS.index("jumping")] = 1
    expected[1, [VOC_ACTIONS.index("phoning"), VOC_ACTIONS.index("reading")]] = 1
    np.testing.assert_array_equal(out["labels"].numpy(), expected)  # devkit convention: +1 / −1
    person, action = training_targets(out["labels"])
    assert person.tolist() == [0, 1, 1]  # two actions → two samples, "other" → none
    assert [VOC_ACTIONS[a] for a in action.tolist()] == ["jumping", "phoning", "reading"]
    # the first person's 40-px square sticks out on the left (x ∈ [-10, 30)):
    # its crop is mirrored there
    pixels = torch.from_numpy(
        np.array(Image.open(root / "VOCdevkit/VOC2012/JPEGImages/a.jpg"))
    ).permute(2, 0, 1)
    from oquab_repro.lib.patches import crop_patches

    square = mirror_crop(pixels, -10, 0, 40).div(255)
    assert torch.allclose(
        out["crops"][0], crop_patches(square, torch.tensor([[0.0, 0, 40, 40]]), 16)[0]
    )


def test_train_and_evaluate_nodes(tmp_path: Path) -> None:
    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
    from oquab_repro.pipelines.actions.nodes import evaluate_actions, load_persons, train_action

    rng = np.random.default_rng(1)
    for split, n in (("train", 10), ("val", 6)):
        persons = {
            f"{split}{i}": [([4, 4, 30, 40], [VOC_ACTIONS[int(k)]]) for k in rng.integers(0, 10, 2)]
            for i in range(n)
        }
        persons[f"{split}x"] = [
            ([4, 4, 30, 40], [a]) for a in VOC_ACTIONS
        ]  # every action has a positive
        _action_voc(tmp_path, persons, split)
    conv = tiny.CONV
    pretrain = tiny.pretrain(dropout=0.2)
    variants = tiny.VARIANTS
    transfer = tiny.transfer(list(variants), 1, flip=True, scratch_fc_dim=8, test_set="test")
    actions = {
        "train_set": "train",
        "test_set": "val",
        "holdout_fraction": 0.3,
        "side_factor": 1.2,
        "variants": list(variants),
        "mini": {"max_epochs": 3, "batch_size": 8, "figure_persons": 4},
        "full": {"max_epochs": 3, "batch_size": 8, "figure_persons": 4},
    }
    persons = load_persons(tmp_path, actions, pretrain, "mini", seed=0, skip_corrupt=False)
    assert not set(persons["fit"]["image_ids"]) & set(
        persons["holdout"]["image_ids"]
    )  # split by image
    torch.manual_seed(0)
    source = to_bundle(
        AlexNet(spec_from_params(16, conv, 8, 0.2), 5), list("abcde"), [0.5] * 3, [0.25] * 3
    )
    results, bundles = {}, {}
    for v, spec in variants.items():
        sources = [] if spec["source"] == "none" else [source]
        bundles[v], results[v], _ = train_action(
            persons,
            Checkpointer(tmp_path / v),
            actions,
            transfer,
            pretrain,
            "mini",
            0,
            "cpu",
            None,
            None,
            *sources,
            variant=v,
        )
        assert results[v]["scores"].shape == (len(persons["test"]["labels"]), len(VOC_ACTIONS))
        assert results[v]["epochs"] == 3 and bundles[v]["classes"] == list(VOC_ACTIONS)
    # the frozen PRE-1512 trunk is the source's C1–FC7; PRE-1512U trains FC6/FC7
    assert torch.equal(
        bundles["pre_in1512"]["state_dict"]["trunk.fc7.0.weight"],
        source["state_dict"]["fc7.0.weight"],
    )
    assert not torch.equal(
        bundles["pre_in1512u"]["state_dict"]["trunk.fc7.0.weight"],
        source["state_dict"]["fc7.0.weight"],
    )
    assert torch.equal(
        bundles["pre_in1512u"]["state_dict"]["trunk.features.c5.0.weight"],
        source["state_dict"]["features.c5.0.weight"],
    )
    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    metrics, table, _ = evaluate_actions(
        persons, reference, actions, transfer, "mini", *results.values()
    )
    assert set(metrics["map_voc10"]) == set(variants) and 0 <= metrics["map_voc10"]["nopre"] <= 100
    ours = table[table.source.str.startswith("ours")].set_index("row")
    assert ours.loc["PRE-1512", "mAP"] == pytest.approx(metrics["map_voc10"]["pre_in1512"])
    assert ours.loc["PRE-1512", list(VOC_ACTIONS)].mean() == pytest.approx(
        metrics["map_voc10"]["pre_in1512"]
    )
    assert metrics["pretraining_helps"]["pre_in1512"] == (
        metrics["map_voc10"]["pre_in1512"] > metrics["map_voc10"]["nopre"]
    )


def test_reference_rows_point_at_the_action_metrics() -> None:
    from oquab_repro.params import read_params_file

    rows = read_params_file(ROOT / "params.yaml")["actions"]["variants"]
    reference = yaml.safe_load((ROOT / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    table = next(t for t in reference["tables"] if t["id"] == "3.3")
    assert [r["ours"][0] for r in table["rows"]] == [f"actions:map_voc10.{v}" for v in rows]
