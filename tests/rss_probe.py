"""Peak memory of a full-profile stage's loading and one capped epoch, in a process of its own.

``python tests/rss_probe.py weak|pretrain ROOT IMAGES [--preload]`` writes ``IMAGES`` synthetic
500×375 JPEGs in the stage's official layout under ``ROOT`` (VOC2012 / ImageNet folders), runs the
stage's own nodes on them (``weak``: ``load_sets`` + ``train_variant`` of WEAK SUP; ``pretrain``:
``pretrain``) with ``caps.steps_per_epoch: 2`` and ``caps.epochs: 1``, and prints the peak RSS in
MB of this process and of its DataLoader workers. The networks are narrow (the test is about the
data, not the weights) but see the full profile's image sizes: 500-px weak canvases, 224-px crops.
tests/test_streaming.py compares 4× the images against 1×.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONV = [  # AlexNet's C1–C5 strides and kernels, narrow channels
    {"channels": 8, "kernel": 11, "stride": 4, "padding": 2, "lrn": False, "pool": 3},
    {"channels": 8, "kernel": 5, "stride": 1, "padding": 2, "lrn": False, "pool": 3},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 0},
    {"channels": 8, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": 3},
]


def _jpeg(path: Path, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_voc(root: Path, n: int) -> None:
    """A VOC2012 detection set: ``n`` train images (one 'dog' box each) and 4 val images."""
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    split = {"train": [f"2012_{i:06d}" for i in range(n)], "val": ["2012_v0", "2012_v1"]}
    for name, ids in split.items():
        (base / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
        for image_id in ids:
            _jpeg(base / "JPEGImages" / f"{image_id}.jpg", rng)
            (base / "Annotations").mkdir(exist_ok=True)
            (base / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename><size><width>500</width>"
                "<height>375</height><depth>3</depth></size><object><name>dog</name>"
                "<difficult>0</difficult><truncated>0</truncated><bndbox><xmin>50</xmin>"
                "<ymin>40</ymin><xmax>300</xmax><ymax>260</ymax></bndbox></object></annotation>"
            )


def write_imagenet(root: Path, n: int) -> list[str]:
    """An ILSVRC-style folder: two classes, ``n`` train and ``n // 4`` val images in all."""
    rng, classes = np.random.default_rng(0), ["n01440764", "n01443537"]
    for split, count in (("train", n), ("val", max(2, n // 4))):
        for i in range(count):
            _jpeg(root / split / classes[i % 2] / f"{split}_{i:05d}.JPEG", rng)
    return classes


def _full(section: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params.yaml").read_text())[section]


def run_weak(root: Path, n: int, preload: bool) -> None:
    import torch

    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle
    from oquab_repro.pipelines.weak import nodes

    write_voc(root / "voc", n)
    weak = _full("weak")
    weak["full"] |= {"hidden_dim": 8, "batch_size": 4, "num_workers": 1, "preload": preload}
    torch.manual_seed(0)
    trunk = AlexNet(spec_from_params(224, CONV, 16, 0.5), 5)
    bundle = to_bundle(trunk, list("abcde"), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    sets = nodes.load_sets(root / "voc", root / "coco", weak, "full", 0, False, None, dataset="voc")
    nodes.train_variant(
        sets, bundle, Checkpointer(root / "ckpt"), weak, "full", 0, "cpu", 2, 1,
        dataset="voc", variant="weak_sup",
    )  # fmt: skip


def run_pretrain(root: Path, n: int, preload: bool) -> None:
    from oquab_repro.lib.checkpoint import Checkpointer
    from oquab_repro.pipelines.pretrain import nodes

    classes = write_imagenet(root / "imagenet", n)
    pretrain = _full("pretrain")
    pretrain["full"]["net"]["conv"] = CONV
    pretrain["full"] |= {
        "fc_dim": {k: 16 for k in pretrain["full"]["fc_dim"]},
        "batch_size": 8,
        "num_workers": 1,
        "cache_images": preload,
    }
    nodes.pretrain(
        root / "imagenet", {"in1000c": classes}, Checkpointer(root / "ckpt"), pretrain,
        "full", 0, "cpu", False, None, 2, 1, source="in1000c",
    )  # fmt: skip


def _reset_peak() -> bool:
    """Forget the peak RSS so far (Linux: writing 5 to /proc/self/clear_refs resets VmHWM), so
    that importing torch, whose transient peak depends on the build (CUDA libraries), does not
    mask what the stage's data costs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _own_peak_kb() -> float:
    """This process's peak RSS since the last reset (VmHWM), else since it started."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv: list[str]) -> None:
    stage, root, n = argv[0], Path(argv[1]), int(argv[2])
    import torch

    import oquab_repro.pipelines.pretrain.nodes
    import oquab_repro.pipelines.weak.nodes  # noqa: F401  (imported before the reset)

    torch.set_num_threads(1)
    reset = _reset_peak()
    {"weak": run_weak, "pretrain": run_pretrain}[stage](root, n, "--preload" in argv)
    own = _own_peak_kb()
    peak = max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stdout.write(
        json.dumps(
            {
                "stage": stage,
                "images": n,
                "peak_rss_mb": peak / 1024,
                "main_mb": own / 1024,
                "peak_reset": reset,
            }
        )  # fmt: skip
        + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
