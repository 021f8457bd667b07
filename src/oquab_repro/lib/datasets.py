"""The one loader layer every stage uses: torchvision datasets, ``tv_tensors`` boxes, clear errors.

Both profiles read the same on-disk formats from the same paths under ``data/01_raw/``
(built offline by the ``data`` stage for ``mini``, downloaded for ``full``)::

    data/01_raw/imagenet/{train,val}/<wnid>/*.JPEG          ImageFolder (ILSVRC-2012 layout)
    data/01_raw/voc/VOCdevkit/VOC2007/...                    Pascal VOC (VOC2012 beside it in full)
    data/01_raw/coco/{train2014,val2014}/*.jpg               COCO images
    data/01_raw/coco/annotations/instances_{train,val}2014.json
    data/01_raw/gan/<name>/                                  image folder (LSUN: LMDB in full)

API (every function raises :class:`DataError` naming the file and the fix):

- :func:`voc_detection` ``(root, year, image_set)`` → samples ``(PIL image, target)`` with
  ``target = {"boxes": BoundingBoxes XYXY, "labels": int64, "difficult": bool, "truncated": bool,
  "image_id": str}``. Boxes are continuous 0-based pixel coordinates: VOC's 1-based inclusive
  ``xmin`` becomes ``xmin - 1`` so a VOC box and its COCO ``[x, y, w, h]`` copy give the same
  tensor. Labels index :data:`VOC_LABELS` (0 is the background, 1..20 the classes).
- :func:`coco_detection` ``(images_dir, annotations_file)`` → the same target layout, labels are
  COCO category ids (``dataset.categories`` maps id → name); images without objects get empty boxes.
- :func:`imagenet_folder` ``(root, split, classes=None)`` → ``(PIL image, class index)``;
  ``classes`` restricts to a subset of wnids (the 1000C / 1000R / 1512 source sets).
- :func:`gan_images` ``(name, root, image_size)`` → float tensors ``3×S×S`` in [-1, 1].
- :func:`voc_actions` ``(root, image_set)`` → VOC2012 action set: one sample per person box.

Detection datasets accept ``transforms`` (a ``torchvision.transforms.v2`` callable applied to
``(image, target)``, so boxes follow crops and flips). ``skip_corrupt=True`` replaces an unreadable
image by the next readable one and counts it in ``dataset.skipped`` (the stage reports it in its
metrics); ``False`` raises naming the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

log = logging.getLogger(__name__)

BACKGROUND = "__background__"
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
VOC_LABELS: tuple[str, ...] = (BACKGROUND, *VOC_CLASSES)
VOC_ACTIONS: tuple[str, ...] = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse", "running",
    "takingphoto", "usingcomputer", "walking",
)  # fmt: skip

_BUILD_HINT = "build it with `dvc repro data` (profile mini) or fetch it (profile full, see README)"
_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError)


class DataError(ValueError):
    """Bad or missing input data; the message names the file and how to fix it."""


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} not found; {_BUILD_HINT}.")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {_BUILD_HINT}.")
    return path


class _SkipCorrupt(Dataset):
    """Shared corrupt-image policy: raise naming the file, or skip to the next image and count."""

    skip_corrupt: bool
    skipped: set[int]

    def _path(self, index: int) -> str:
        raise NotImplementedError

    def _load(self, index: int) -> Any:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        for offset in range(n):
            i = (index + offset) % n
            try:
                return self._load(i)
            except DataError:
                raise
            except _READ_ERRORS as exc:
                if not self.skip_corrupt:
                    raise DataError(
                        f"{self._path(i)}: unreadable image ({exc}); re-fetch the dataset "
                        "(`dvc repro data`) or set data.skip_corrupt: true to skip and count it."
                    ) from exc
                if i not in self.skipped:
                    self.skipped.add(i)
                    log.warning("Skipping unreadable image %s (%s)", self._path(i), exc)
        raise DataError(f"{self._path(index)}: no readable image in the whole dataset; {_BUILD_HINT}.")


# ---------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------


def _voc_size(annotation: dict[str, Any], xml: Path) -> tuple[int, int]:
    size = annotation.get("size")
    if not isinstance(size, dict) or "width" not in size or "height" not in size:
        raise DataError(
            f"{xml}: no <size><width>/<height> element; every VOC annotation needs the image size "
            "(re-extract the official archive, or regenerate the mini data with `dvc repro data`)."
        )
    return int(size["height"]), int(size["width"])


class VOCDetectionDataset(_SkipCorrupt):
    """torchvision ``VOCDetection`` wrapped for transforms v2, with a checked label map."""

    def __init__(
        self,
        root: Path,
        year: str,
        image_set: str,
        classes: Sequence[str],
        transforms: Callable | None,
        skip_corrupt: bool,
    ):
        self.root = Path(root)
        base = _require_dir(self.root / "VOCdevkit" / f"VOC{year}", f"Pascal VOC {year}")
        split_file = _require_file(base / "ImageSets" / "Main" / f"{image_set}.txt", f"VOC image set '{image_set}'")
        if not split_file.read_text().split():
            raise DataError(f"{split_file}: empty image set; regenerate or re-extract VOC {year} ({_BUILD_HINT}).")
        self.labels = (BACKGROUND, *classes)
        self.label_to_index = {name: i for i, name in enumerate(self.labels)}
        voc = datasets.VOCDetection(str(self.root), year=year, image_set=image_set, download=False)
        self.voc = datasets.wrap_dataset_for_transforms_v2(voc, target_keys={"annotation", "boxes"})
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.voc)

    def _path(self, index: int) -> str:
        return self.voc.images[index]

    def annotation_path(self, index: int) -> Path:
        return Path(self.voc.annotations[index])

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        xml = self.annotation_path(index)
        try:
            image, target = self.voc[index]
        except KeyError as exc:  # the wrapper reads annotation["object"]
            raise DataError(f"{xml}: annotation without <object>; every VOC image has at least one.") from exc
        except ET.ParseError as exc:
            raise DataError(f"{xml}: not valid XML ({exc}); re-extract the dataset.") from exc
        annotation = target["annotation"]
        height, width = _voc_size(annotation, xml)
        if (height, width) != (image.height, image.width):
            raise DataError(
                f"{xml}: <size> says {width}×{height} but {self._path(index)} is "
                f"{image.width}×{image.height}; the annotation belongs to another image."
            )
        objects = annotation["object"]
        labels = []
        for obj in objects:
            if obj["name"] not in self.label_to_index:
                raise DataError(
                    f"{xml}: class '{obj['name']}' is not in the label map {list(self.labels[1:])}; "
                    "fix the annotation or pass the dataset's classes."
                )
            labels.append(self.label_to_index[obj["name"]])
        boxes = target["boxes"].as_subclass(torch.Tensor).float()
        boxes[:, :2] -= 1  # VOC 1-based inclusive → continuous 0-based
        out = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "difficult": torch.tensor([int(o.get("difficult", 0)) for o in objects], dtype=torch.bool),
            "truncated": torch.tensor([int(o.get("truncated", 0)) for o in objects], dtype=torch.bool),
            "image_id": annotation["filename"].rsplit(".", 1)[0],
        }
        if self.transforms is not None:
            return self.transforms(image, out)
        return image, out


def voc_detection(
    root: str | Path,
    year: str = "2007",
    image_set: str = "trainval",
    *,
    classes: Sequence[str] = VOC_CLASSES,
    transforms: Callable | None = None,
    skip_corrupt: bool = False,
) -> VOCDetectionDataset:
    """Pascal VOC detection set under ``root/VOCdevkit/VOC<year>`` (``root`` = ``data/01_raw/voc``)."""
    return VOCDetectionDataset(Path(root), str(year), image_set, classes, transforms, skip_corrupt)


class VOCActionDataset(_SkipCorrupt):
    """VOC2012 action classification: one sample per annotated person (image, person box, actions)."""

    def __init__(self, root: Path, image_set: str, transforms: Callable | None, skip_corrupt: bool):
        base = _require_dir(Path(root) / "VOCdevkit" / "VOC2012", "Pascal VOC 2012 (action set)")
        split_file = _require_file(base / "ImageSets" / "Action" / f"{image_set}.txt", f"VOC action set '{image_set}'")
        ids = split_file.read_text().split()
        if not ids:
            raise DataError(f"{split_file}: empty image set; re-extract VOC 2012 ({_BUILD_HINT}).")
        self.samples: list[tuple[Path, Path, dict[str, Any]]] = []
        for image_id in ids:
            xml = _require_file(base / "Annotations" / f"{image_id}.xml", "VOC action annotation")
            annotation = datasets.VOCDetection.parse_voc_xml(ET.parse(xml).getroot())["annotation"]
            for obj in annotation.get("object", []):
                if "actions" in obj:
                    self.samples.append((base / "JPEGImages" / f"{image_id}.jpg", xml, obj))
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _path(self, index: int) -> str:
        return str(self.samples[index][0])

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        path, xml, obj = self.samples[index]
        with Image.open(path) as handle:
            image = handle.convert("RGB")
        box = [float(obj["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        box[0] -= 1
        box[1] -= 1
        actions = torch.tensor([int(float(obj["actions"].get(a, 0))) for a in VOC_ACTIONS], dtype=torch.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=(image.height, image.width)),
            "actions": actions,
            "image_id": path.stem,
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


def voc_actions(
    root: str | Path, image_set: str = "trainval", *, transforms: Callable | None = None, skip_corrupt: bool = False
) -> VOCActionDataset:
    """VOC2012 action set under ``root/VOCdevkit/VOC2012`` (``ImageSets/Action``); actions follow :data:`VOC_ACTIONS`."""
    return VOCActionDataset(Path(root), image_set, transforms, skip_corrupt)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------


class CocoDetectionDataset(_SkipCorrupt):
    """torchvision ``CocoDetection`` (pycocotools) wrapped for transforms v2."""

    def __init__(self, images_dir: Path, annotations: Path, transforms: Callable | None, skip_corrupt: bool):
        _require_dir(images_dir, "COCO image folder")
        _require_file(annotations, "COCO annotation file")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco = datasets.CocoDetection(str(images_dir), str(annotations))
        except (ValueError, KeyError, AssertionError) as exc:
            raise DataError(f"{annotations}: not a COCO instances file ({exc}); re-extract the annotations.") from exc
        if len(coco) == 0:
            raise DataError(f"{annotations}: no images listed; {_BUILD_HINT}.")
        self.coco = datasets.wrap_dataset_for_transforms_v2(coco, target_keys={"image_id", "boxes", "labels"})
        self.categories = {int(c["id"]): c["name"] for c in coco.coco.loadCats(coco.coco.getCatIds())}
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.coco)

    def _path(self, index: int) -> str:
        coco = self.coco._dataset
        return str(Path(coco.root) / coco.coco.loadImgs(coco.ids[index])[0]["file_name"])

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        image, target = self.coco[index]
        if "boxes" not in target:  # an image without annotations
            target["boxes"] = tv_tensors.BoundingBoxes(
                torch.zeros(0, 4), format="XYXY", canvas_size=(image.height, image.width)
            )
            target["labels"] = torch.zeros(0, dtype=torch.int64)
        unknown = set(target["labels"].tolist()) - set(self.categories)
        if unknown:
            raise DataError(f"{self._path(index)}: category ids {sorted(unknown)} not in the annotation file's categories.")
        target["boxes"] = tv_tensors.wrap(target["boxes"].float(), like=target["boxes"])
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


def coco_detection(
    images_dir: str | Path,
    annotations_file: str | Path,
    *,
    transforms: Callable | None = None,
    skip_corrupt: bool = False,
) -> CocoDetectionDataset:
    """COCO instances set: images in ``images_dir``, annotations in a COCO JSON file."""
    return CocoDetectionDataset(Path(images_dir), Path(annotations_file), transforms, skip_corrupt)


# ---------------------------------------------------------------------------------------------
# ImageNet folders
# ---------------------------------------------------------------------------------------------


class _ImageFolder(datasets.ImageFolder):
    """``ImageFolder`` over a chosen subset of class folders (all when ``wanted`` is None)."""

    def __init__(self, root: str, wanted: Sequence[str] | None, **kwargs: Any):
        self._wanted = None if wanted is None else list(wanted)
        super().__init__(root, **kwargs)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        found, _ = super().find_classes(directory)
        if self._wanted is None:
            classes = found
        else:
            missing = sorted(set(self._wanted) - set(found))
            if missing:
                shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                raise DataError(
                    f"{directory}: {len(missing)} requested class folders missing ({shown}); "
                    "re-extract ImageNet or fix the class list."
                )
            classes = sorted(self._wanted)
        return classes, {c: i for i, c in enumerate(classes)}


class ImageFolderDataset(_SkipCorrupt):
    """Image classification folder (``<root>/<class>/<image>``) with the corrupt-image policy."""

    def __init__(
        self, root: Path, classes: Sequence[str] | None, transform: Callable | None, skip_corrupt: bool
    ):
        _require_dir(root, "image folder")
        try:
            self.folder = _ImageFolder(str(root), classes, transform=transform)
        except FileNotFoundError as exc:
            raise DataError(f"{root}: {exc}; {_BUILD_HINT}.") from exc
        self.classes = self.folder.classes
        self.class_to_idx = self.folder.class_to_idx
        self.targets = self.folder.targets
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return len(self.folder)

    def _path(self, index: int) -> str:
        return self.folder.samples[index][0]

    def _load(self, index: int) -> tuple[Any, int]:
        return self.folder[index]


def imagenet_folder(
    root: str | Path,
    split: str,
    *,
    classes: Sequence[str] | None = None,
    transform: Callable | None = None,
    skip_corrupt: bool = False,
) -> ImageFolderDataset:
    """ImageNet in folder layout ``root/<split>/<wnid>/*.JPEG``; ``classes`` picks a subset of wnids."""
    if split not in {"train", "val"}:
        raise DataError(f"imagenet split '{split}': use 'train' or 'val'.")
    return ImageFolderDataset(Path(root) / split, classes, transform, skip_corrupt)


# ---------------------------------------------------------------------------------------------
# GAN image sets
# ---------------------------------------------------------------------------------------------


def gan_transform(image_size: int) -> v2.Compose:
    """Resize the short side, centre-crop to a square and scale to [-1, 1] (DCGAN's tanh range)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )


class GanImages(Dataset):
    """Unlabelled images as ``3×S×S`` tensors in [-1, 1] for the GAN grid."""

    def __init__(self, base: Dataset, name: str):
        self.base = base
        self.name = name

    def __len__(self) -> int:
        return len(self.base)

    @property
    def skipped(self) -> set[int]:
        return getattr(self.base, "skipped", set())

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[index][0]


def gan_images(name: str, root: str | Path, image_size: int, *, skip_corrupt: bool = False) -> GanImages:
    """GAN training images ``root`` (= ``data/01_raw/gan/<name>``): an image folder, or LSUN's LMDB.

    LSUN (full profile) is read from ``<root>/<category>_lmdb`` with ``torchvision.datasets.LSUN``
    (needs the ``lmdb`` package, extra ``full``); every other set is a folder of images (LFW's
    per-person folders). torchvision caches LSUN's key list in a ``_cache_*`` file in the working
    directory; it is written inside ``root`` instead, so the first load (the data stage) creates it
    within the DVC out.
    """
    root = _require_dir(Path(root), f"GAN image set '{name}'").resolve()
    transform = gan_transform(image_size)
    lmdbs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.endswith("_lmdb"))
    if lmdbs:
        with contextlib.chdir(root):
            base: Dataset = datasets.LSUN(
                str(root), classes=[p.name.removesuffix("_lmdb") for p in lmdbs], transform=transform
            )
    else:
        base = ImageFolderDataset(root, None, transform, skip_corrupt)
    if len(base) == 0:
        raise DataError(f"{root}: GAN image set '{name}' is empty; {_BUILD_HINT}.")
    return GanImages(base, name)
