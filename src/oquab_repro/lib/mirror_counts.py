"""How big the rehearsal mirror is (:mod:`oquab_repro.lib.mirror`), kept light
for the CLI's ``--help``.

Each field becomes an option of ``oquab-repro mirror build`` with its help text; the defaults keep a
build to well under a minute and ~150 MB while every network of the full profile keeps its size
(1000 ImageNet classes, the 1512 set's 512 added synsets).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The 1512 set's roots and how many synsets the thesis adds below each (§3.3:
# 276 + 165 + 48 + 18 + 5).
ROOT_SHARES = {"n02370806": 276, "n03405725": 165, "n03791235": 48, "n04019101": 18, "n02834778": 5}


def _count(default: int, help_text: str) -> int:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class MirrorCounts:
    """How many images (or items) each archive of the mirror holds."""

    voc2007_trainval: int = _count(24, "VOC2007 trainval images (train/val = halves)")
    voc2007_test: int = _count(16, "VOC2007 test images")
    voc2012_trainval: int = _count(24, "VOC2012 detection images (ImageSets/Main train/val)")
    voc2012_actions: int = _count(16, "VOC2012 action images, 1-3 persons each (ImageSets/Action)")
    coco_train: int = _count(24, "COCO train2014 images")
    coco_val: int = _count(16, "COCO val2014 images")
    lfw_people: int = _count(12, "LFW persons, 1-4 images each")
    lsun_train: int = _count(24, "LSUN bedroom train images (LMDB)")
    lsun_val: int = _count(8, "LSUN bedroom val images (LMDB)")
    imagenet_classes: int = _count(1000, "ILSVRC-2012 classes (the full networks' 1000-way output)")
    imagenet_train: int = _count(1, "ILSVRC-2012 train images per class")
    imagenet_val: int = _count(1, "ILSVRC-2012 val images per class")
    fall11_subtree: int = _count(
        512, "fall 2011 synsets below the five 1512 roots (the thesis adds 512)"
    )
    fall11_other: int = _count(200, "further fall 2011 synsets that 1000R can draw")
    fall11_images: int = _count(
        2, "images per fall 2011 synset (>= 2: the data stage holds some out as val)"
    )
    tuebingen_pairs: int = _count(12, "Tuebingen pairs (every 6th multivariate)")
    seed: int = _count(0, "seed of every drawing (same seed, same bytes)")
    workers: int = _count(2, "threads drawing ImageNet images (the bytes do not depend on it)")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < (0 if name in {"seed", "fall11_other"} else 1):
                raise ValueError(f"mirror count {name} = {value}: must be positive")
        if self.fall11_images < 2:
            raise ValueError(
                "fall11_images must be at least 2 (the data stage holds one out as val)"
            )
        if self.fall11_subtree < len(ROOT_SHARES):
            raise ValueError(
                f"fall11_subtree must be at least {len(ROOT_SHARES)} (one per 1512 root)"
            )
