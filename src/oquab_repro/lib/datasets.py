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
image by the next readable one and counts it in ``dataset.skipped`` (every stage that reads images
takes ``params:data.skip_corrupt`` and reports :func:`skip_summary` in its metrics; loops over a
whole split leave out ``index in dataset.skipped`` rather than count a neighbour twice);
``False`` raises naming the file. Annotation errors (invalid XML, a missing or
non-numeric field, an empty box or one wholly outside its image) always raise, naming the XML and
the field; boxes that merely run past the image are clipped and counted in
``dataset.clipped_boxes``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

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


class Capped(Subset):
    """A seeded choice of a dataset's items (``caps.images_per_set``) that keeps its
    data.skip_corrupt record: ``skipped`` holds the positions here whose image the dataset found
    unreadable, and ``base`` the dataset (:func:`skipped_files`)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        super().__init__(dataset, indices)
        self.base = dataset
        self._position = {index: position for position, index in enumerate(indices)}

    @property
    def skipped(self) -> set[int]:
        found = getattr(self.base, "skipped", ())
        return {self._position[i] for i in found if i in self._position}


def capped(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """``caps.images_per_set``: a seeded choice of ``limit`` items in their original order, or the
    whole set when there is no cap (``None``) or it holds no more than ``limit``."""
    n = len(dataset)
    if limit is None or limit >= n:
        return dataset
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
    return Capped(dataset, index.sort().values.tolist())


def _item_of(dataset: Dataset, index: int) -> tuple[Dataset, int]:
    """The dataset that keeps the skip record of item ``index`` of ``dataset``, and its index
    there: a subset (a :class:`Capped` choice, a seeded GAN split) records nothing itself."""
    if isinstance(dataset, Subset):
        return dataset.dataset, dataset.indices[index]
    return dataset, index


def mark_skipped(dataset: Dataset, index: int) -> None:
    """Record in this process that item ``index`` is unreadable, found by a DataLoader worker
    (whose ``skipped`` set is its own copy), so that :func:`skip_summary` counts it here too."""
    base, index = _item_of(dataset, index)
    base.skipped.add(index)


def _is_skipped(dataset: Dataset, index: int) -> bool:
    """Whether this process found item ``index`` unreadable (what :func:`mark_skipped` records)."""
    base, index = _item_of(dataset, index)
    return index in getattr(base, "skipped", ())


def _found(item: Any) -> bool:
    return True


class _Readings(Dataset):
    """``read(item)`` of every item of a dataset, or ``None`` for an item the reading process
    found unreadable (data.skip_corrupt: the item it got is a neighbour's). ``read`` keeps only
    small plain values: thousands of tensors received from workers would each hold a file
    descriptor."""

    def __init__(self, dataset: Dataset, read: Callable[[Any], Any]):
        self.dataset, self.read = dataset, read

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        item = self.dataset[i]
        return None if _is_skipped(self.dataset, i) else self.read(item)


def read_in_workers(
    dataset: Dataset, workers: int, desc: str, read: Callable[[Any], Any] = _found
) -> Iterator[tuple[int, Any]]:
    """``(index, read(item))`` of every readable item, read once in ``workers`` DataLoader
    processes: how a streamed set learns which images are unreadable. A worker's ``skipped`` set
    is its own copy, so each item a worker found unreadable is left out here and recorded in this
    process (:func:`mark_skipped`), where :func:`skip_summary` counts it as it counts the images
    an in-memory set skipped. ``read`` must be picklable (a module-level function)."""
    loader = DataLoader(_Readings(dataset, read), batch_size=None, num_workers=workers)
    for i, value in enumerate(tqdm(loader, desc=f"index {desc}", unit="image", leave=False)):
        if value is None:
            mark_skipped(dataset, i)
        else:
            yield i, value


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
        raise DataError(
            f"{self._path(index)}: no readable image in the whole dataset; {_BUILD_HINT}."
        )


def skipped_files(dataset: Dataset) -> list[str]:
    """The files a ``skip_corrupt`` dataset skipped so far (in this process), sorted."""
    base = getattr(dataset, "base", dataset)
    return sorted(base._path(i) for i in getattr(base, "skipped", ()))


def skip_summary(*datasets: Dataset, shown: int = 5) -> dict[str, Any]:
    """What a stage puts in its metrics under ``data.skip_corrupt``: how many unreadable images
    it skipped and the first few names (the warnings in the log list every one)."""
    return summarise_skipped([f for d in datasets for f in skipped_files(d)], shown)


def summarise_skipped(files: list[str], shown: int = 5) -> dict[str, Any]:
    """:func:`skip_summary` of file paths gathered elsewhere (e.g. several loader calls)."""
    files = sorted(set(files))
    return {"skipped_images": len(files), "skipped_first": [Path(f).name for f in files[:shown]]}


# ---------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------


def _parse_voc_xml(xml: Path) -> dict[str, Any]:
    """torchvision's VOC parser on one file; a broken file is an annotation
    error, never an image one."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise DataError(
            f"{xml}: not valid XML ({exc}); fix the annotation or re-extract the dataset."
        ) from exc
    except OSError as exc:
        raise DataError(
            f"{xml}: annotation missing or unreadable ({exc}); re-extract the dataset"
            f" ({_BUILD_HINT})."
        ) from exc
    return datasets.VOCDetection.parse_voc_xml(root).get("annotation", {})


def _number(node: Any, key: str, xml: Path, where: str, *, whole: bool = False) -> float:
    """A numeric field of a parsed VOC element; a missing or non-numeric one
    names the file and the field."""
    value = node.get(key) if isinstance(node, dict) else None
    try:
        number = float(value)  # type: ignore[arg-type]
        if whole and number != int(number):
            raise ValueError
    except (TypeError, ValueError):
        shown = "missing" if value is None else f"{value!r}"
        kind = "a whole number" if whole else "a number"
        raise DataError(
            f"{xml}: {where}<{key}> is {shown}, not {kind}; fix the annotation "
            "(or re-extract the official archive / regenerate the mini data with `dvc repro data`)."
        ) from None
    return number


def _voc_size(annotation: dict[str, Any], xml: Path) -> tuple[int, int]:
    size = annotation.get("size")
    if not isinstance(size, dict) or "width" not in size or "height" not in size:
        raise DataError(
            f"{xml}: no <size><width>/<height> element; every VOC annotation needs the image size "
            "(re-extract the official archive, or regenerate the mini data with `dvc repro data`)."
        )
    height, width = (int(_number(size, k, xml, "<size>", whole=True)) for k in ("height", "width"))
    if height <= 0 or width <= 0:
        raise DataError(
            f"{xml}: <size> is {width}×{height}; width and height must be positive. Fix the"
            " annotation."
        )
    return height, width


def _voc_flag(obj: dict[str, Any], key: str, xml: Path, where: str) -> bool:
    """``difficult``/``truncated``/an action: 0 or 1 (absent = 0; the
    action XMLs write 0.0/1.0 too)."""
    return key in obj and _number(obj, key, xml, where) > 0


def _voc_box(
    obj: dict[str, Any], xml: Path, where: str, width: int, height: int
) -> tuple[list[float], bool]:
    """A VOC box (1-based, inclusive) as continuous 0-based XYXY, clipped to the image.

    Returns the box and whether it had to be clipped; a box that is empty or lies wholly outside
    the image is an annotation error naming the file and the object.
    """
    bndbox = obj.get("bndbox")
    if not isinstance(bndbox, dict):
        raise DataError(
            f"{xml}: {where}has no <bndbox>; fix the annotation or re-extract the dataset."
        )
    x0, y0, x1, y1 = (
        _number(bndbox, k, xml, f"{where}<bndbox>") for k in ("xmin", "ymin", "xmax", "ymax")
    )
    raw = [x0 - 1, y0 - 1, x1, y1]  # VOC 1-based inclusive → continuous 0-based
    box = [
        min(max(raw[0], 0.0), width),
        min(max(raw[1], 0.0), height),
        min(raw[2], float(width)),
        min(raw[3], float(height)),
    ]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(
            f"{xml}: {where}box (xmin {x0:g}, ymin {y0:g}, xmax {x1:g}, ymax {y1:g}) is empty or"
            f" lies outside the {width}×{height} image; fix the annotation."
        )
    return box, box != raw


def _open_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as handle:
        return handle.convert("RGB")


class _ClipCounter:
    """Boxes clipped to their image, counted once per sample however often it is loaded."""

    clipped: dict[int, int]

    def _count_clipped(self, index: int, n: int, xml: Path) -> None:
        if n and index not in self.clipped:
            log.warning("%s: %d box(es) extend past the image; clipped to it", xml, n)
        if n:
            self.clipped[index] = n

    @property
    def clipped_boxes(self) -> int:
        return sum(self.clipped.values())


class VOCDetectionDataset(_SkipCorrupt, _ClipCounter):
    """Pascal VOC detection: torchvision's split files and XML parser, with checked fields.

    Annotations are parsed here rather than by torchvision's transforms-v2 wrapper, which turns
    coordinates into ``int`` while it reads the image: a bad ``<width>`` or ``<xmax>`` would then
    be blamed on the JPEG. Here the XML is checked first, each bad field named; boxes that run past
    the image are clipped and counted (``clipped_boxes``), empty or outside ones are errors.
    """

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
        split_file = _require_file(
            base / "ImageSets" / "Main" / f"{image_set}.txt", f"VOC image set '{image_set}'"
        )
        if not split_file.read_text().split():
            raise DataError(
                f"{split_file}: empty image set; regenerate or re-extract VOC {year}"
                f" ({_BUILD_HINT})."
            )
        self.labels = (BACKGROUND, *classes)
        self.label_to_index = {name: i for i, name in enumerate(self.labels)}
        self.voc = datasets.VOCDetection(
            str(self.root), year=year, image_set=image_set, download=False
        )
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()
        self.clipped: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.voc)

    def _path(self, index: int) -> str:
        return self.voc.images[index]

    def annotation_path(self, index: int) -> Path:
        return Path(self.voc.annotations[index])

    def _target(self, index: int) -> dict[str, Any]:
        xml = self.annotation_path(index)
        annotation = _parse_voc_xml(xml)
        height, width = _voc_size(annotation, xml)
        objects = annotation.get("object") or []
        if not objects:
            raise DataError(
                f"{xml}: annotation without <object>; every VOC image has at least one."
            )
        labels, boxes, clipped = [], [], 0
        for k, obj in enumerate(objects, start=1):
            name = obj.get("name")
            if name not in self.label_to_index:
                raise DataError(
                    f"{xml}: class '{name}' is not in the label map {list(self.labels[1:])}; "
                    "fix the annotation or pass the dataset's classes."
                )
            box, was_clipped = _voc_box(obj, xml, f"<object> {k} ('{name}') ", width, height)
            labels.append(self.label_to_index[name])
            boxes.append(box)
            clipped += was_clipped
        self._count_clipped(index, clipped, xml)
        where = [f"<object> {k} ('{o['name']}') " for k, o in enumerate(objects, start=1)]
        return {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(boxes), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "difficult": torch.tensor(
                [_voc_flag(o, "difficult", xml, w) for o, w in zip(objects, where, strict=True)]
            ),
            "truncated": torch.tensor(
                [_voc_flag(o, "truncated", xml, w) for o, w in zip(objects, where, strict=True)]
            ),
            "image_id": str(annotation.get("filename", Path(self._path(index)).name)).rsplit(
                ".", 1
            )[0],
        }

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        target = self._target(index)  # the XML first: its errors are never blamed on the image
        image = _open_rgb(self._path(index))
        height, width = target["boxes"].canvas_size
        if (height, width) != (image.height, image.width):
            raise DataError(
                f"{self.annotation_path(index)}: <size> says {width}×{height} but"
                f" {self._path(index)} is {image.width}×{image.height}; the annotation belongs to"
                " another image."
            )
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


def voc_detection(
    root: str | Path,
    year: str = "2007",
    image_set: str = "trainval",
    *,
    classes: Sequence[str] = VOC_CLASSES,
    transforms: Callable | None = None,
    skip_corrupt: bool = False,
) -> VOCDetectionDataset:
    """Pascal VOC detection set under ``root/VOCdevkit/VOC<year>`` (``root`` =
    ``data/01_raw/voc``)."""
    return VOCDetectionDataset(Path(root), str(year), image_set, classes, transforms, skip_corrupt)


class VOCActionDataset(_SkipCorrupt, _ClipCounter):
    """VOC2012 action classification: one sample per annotated person
    (image, person box, actions)."""

    def __init__(self, root: Path, image_set: str, transforms: Callable | None, skip_corrupt: bool):
        base = _require_dir(Path(root) / "VOCdevkit" / "VOC2012", "Pascal VOC 2012 (action set)")
        split_file = _require_file(
            base / "ImageSets" / "Action" / f"{image_set}.txt", f"VOC action set '{image_set}'"
        )
        ids = split_file.read_text().split()
        if not ids:
            raise DataError(f"{split_file}: empty image set; re-extract VOC 2012 ({_BUILD_HINT}).")
        self.samples: list[tuple[Path, Path, int, dict[str, Any], tuple[int, int]]] = []
        for image_id in ids:
            xml = _require_file(base / "Annotations" / f"{image_id}.xml", "VOC action annotation")
            annotation = _parse_voc_xml(xml)
            size = _voc_size(annotation, xml)
            for k, obj in enumerate(annotation.get("object") or [], start=1):
                if "actions" in obj:
                    self.samples.append(
                        (base / "JPEGImages" / f"{image_id}.jpg", xml, k, obj, size)
                    )
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()
        self.clipped: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _path(self, index: int) -> str:
        return str(self.samples[index][0])

    def _load(self, index: int) -> tuple[Any, dict[str, Any]]:
        path, xml, k, obj, (height, width) = self.samples[index]
        where = f"<object> {k} ('{obj.get('name')}') "
        box, clipped = _voc_box(obj, xml, where, width, height)
        self._count_clipped(index, int(clipped), xml)
        actions = obj["actions"] if isinstance(obj["actions"], dict) else {}
        flags = [_voc_flag(actions, a, xml, f"{where}<actions>") for a in VOC_ACTIONS]
        image = _open_rgb(path)
        if (height, width) != (image.height, image.width):
            raise DataError(
                f"{xml}: <size> says {width}×{height} but {path} is {image.width}×{image.height}."
            )
        target = {
            "boxes": tv_tensors.BoundingBoxes([box], format="XYXY", canvas_size=(height, width)),
            "actions": torch.tensor(flags, dtype=torch.float32),
            "image_id": path.stem,
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target


def voc_actions(
    root: str | Path,
    image_set: str = "trainval",
    *,
    transforms: Callable | None = None,
    skip_corrupt: bool = False,
) -> VOCActionDataset:
    """VOC2012 action set under ``root/VOCdevkit/VOC2012`` (``ImageSets/Action``); actions
    follow :data:`VOC_ACTIONS`."""
    return VOCActionDataset(Path(root), image_set, transforms, skip_corrupt)


# ---------------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------------


class CocoDetectionDataset(_SkipCorrupt, _ClipCounter):
    """torchvision ``CocoDetection`` (pycocotools) wrapped for transforms v2.

    Boxes are clamped to the image; those that ran past it by more than a pixel (beyond COCO's
    rounding) are counted in ``clipped_boxes``.
    """

    def __init__(
        self, images_dir: Path, annotations: Path, transforms: Callable | None, skip_corrupt: bool
    ):
        _require_dir(images_dir, "COCO image folder")
        _require_file(annotations, "COCO annotation file")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco = datasets.CocoDetection(str(images_dir), str(annotations))
        except (ValueError, KeyError, AssertionError) as exc:
            raise DataError(
                f"{annotations}: not a COCO instances file ({exc}); re-extract the annotations."
            ) from exc
        if len(coco) == 0:
            raise DataError(f"{annotations}: no images listed; {_BUILD_HINT}.")
        self.coco = datasets.wrap_dataset_for_transforms_v2(
            coco, target_keys={"image_id", "boxes", "labels"}
        )
        self.categories = {
            int(c["id"]): c["name"] for c in coco.coco.loadCats(coco.coco.getCatIds())
        }
        self.transforms = transforms
        self.skip_corrupt = skip_corrupt
        self.skipped: set[int] = set()
        self.clipped: dict[int, int] = {}

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
            raise DataError(
                f"{self._path(index)}: category ids {sorted(unknown)} not in the annotation file's"
                " categories."
            )
        boxes = target["boxes"].float()
        clamped = v2.functional.clamp_bounding_boxes(tv_tensors.wrap(boxes, like=target["boxes"]))
        self._count_clipped(
            index, int(((clamped - boxes).abs() > 1).any(dim=1).sum()), Path(self._path(index))
        )
        target["boxes"] = clamped
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
        self,
        root: Path,
        classes: Sequence[str] | None,
        transform: Callable | None,
        skip_corrupt: bool,
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
    """ImageNet in folder layout ``root/<split>/<wnid>/*.JPEG``;
    ``classes`` picks a subset of wnids."""
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


def gan_images(
    name: str, root: str | Path, image_size: int, *, skip_corrupt: bool = False
) -> GanImages:
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
        if importlib.util.find_spec("lmdb") is None:
            raise DataError(
                f"{lmdbs[0]}: reading LSUN's LMDB needs the package 'lmdb': pip install -e"
                " '.[full]'."
            )
        with contextlib.chdir(root):
            base: Dataset = datasets.LSUN(
                str(root),
                classes=[p.name.removesuffix("_lmdb") for p in lmdbs],
                transform=transform,
            )
    else:
        base = ImageFolderDataset(root, None, transform, skip_corrupt)
    if len(base) == 0:
        raise DataError(f"{root}: GAN image set '{name}' is empty; {_BUILD_HINT}.")
    return GanImages(base, name)
