"""Offline mini datasets in the official on-disk formats, drawn from scikit-learn's real digits.

Objects are the 1,797 handwritten 8×8 digits bundled with scikit-learn (``load_digits``), upscaled,
rotated and painted in a colour and a style. An object *type* is (digit, colour, style):

- source set (ImageNet folder format): every type (10 digits × 6 colours × 2 styles = 120
  classes, wnid-like ids ``n9<digit><colour><style>0000``), one roughly centred object per image on
  a cluttered background, with position/scale/rotation jitter;
- target set (Pascal VOC 2007 format + a COCO copy): cluttered scenes with 1–5 objects of the 20
  target types (digits in solid red or solid blue), named after the 20 VOC classes so the label
  map, the loaders and the evaluation are exactly the full profile's; other types and random shapes
  appear as unlabelled distractors; small or mostly cut-off objects are ``difficult``, objects
  crossing the border ``truncated``;
- GAN sets (image folders, 32×32 by default), one per params.GAN_DATASETS entry, drawn by its kind
  (:data:`GAN_DRAWERS`): ``faces`` (``lfw``) — centred digit "faces", one folder per identity like
  LFW; ``scenes`` (``lsun_bedroom``) — small cluttered scenes.

Digit samples are split into disjoint pools (source / target trainval / target test) so the target
test objects were never seen in pretraining. Everything is drawn from one seeded generator per
part, so a build is bit-for-bit deterministic.
"""

from __future__ import annotations

import json
import logging
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from PIL import Image, ImageDraw, ImageFilter
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

from oquab_repro.lib.datasets import VOC_ACTIONS, VOC_CLASSES
from oquab_repro.params import GAN_DATASETS, MiniDataParams

log = logging.getLogger(__name__)

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "blue": (0.12, 0.25, 0.85),
    "green": (0.15, 0.65, 0.20),
    "yellow": (0.92, 0.82, 0.15),
    "magenta": (0.75, 0.15, 0.70),
    "cyan": (0.15, 0.75, 0.80),
}
STYLES = ("solid", "outline")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
JPEG_QUALITY = 92


@dataclass(frozen=True)
class ObjectType:
    """One object category: a digit painted in a colour and a style."""

    digit: int
    colour: str
    style: str

    @property
    def wnid(self) -> str:
        return f"n9{self.digit}{list(COLOURS).index(self.colour)}{STYLES.index(self.style)}0000"

    @property
    def name(self) -> str:
        return f"{self.colour} {self.style} {DIGIT_NAMES[self.digit]}"


SOURCE_TYPES: tuple[ObjectType, ...] = tuple(
    ObjectType(d, c, s) for d in range(10) for c in COLOURS for s in STYLES
)
# VOC class i ↔ digit i % 10 painted solid red (i < 10) or solid blue (i ≥ 10).
TARGET_TYPES: dict[str, ObjectType] = {
    name: ObjectType(i % 10, "red" if i < 10 else "blue", "solid")
    for i, name in enumerate(VOC_CLASSES)
}
DISTRACTOR_TYPES: tuple[ObjectType, ...] = tuple(
    t for t in SOURCE_TYPES if t not in TARGET_TYPES.values()
)


@dataclass(frozen=True)
class Digits:
    """scikit-learn's digits as [0, 1] images with their labels."""

    images: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls) -> Digits:
        d = load_digits()
        return cls(d.images.astype(np.float32) / 16.0, d.target.astype(np.int64))

    def pools(self, seed: int, fractions: tuple[float, ...]) -> list[np.ndarray]:
        """Disjoint, stratified index pools (so every pool has every digit)."""
        rng = np.random.default_rng(seed)
        pools: list[list[int]] = [[] for _ in fractions]
        edges = np.cumsum((0.0, *fractions))
        for digit in range(10):
            idx = rng.permutation(np.flatnonzero(self.labels == digit))
            cuts = np.round(edges * len(idx)).astype(int)
            for k in range(len(fractions)):
                pools[k].extend(idx[cuts[k] : cuts[k + 1]].tolist())
        return [np.array(sorted(p)) for p in pools]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _background(rng: np.random.Generator, width: int, height: int, clutter: int) -> Image.Image:
    """Smooth random colour field with a few muted rectangles, ellipses and lines."""
    coarse = (rng.random((3, 4, 3)) * 0.5 + 0.3) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    draw = ImageDraw.Draw(image)
    for _ in range(clutter):
        colour = tuple(int(v) for v in rng.integers(60, 200, 3))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = (
            x0 + int(rng.integers(4, max(5, width // 3))),
            y0 + int(rng.integers(4, max(5, height // 3))),
        )
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 4)))
    return image


def _alpha(
    digit: np.ndarray, otype: ObjectType, width: int, height: int, angle: float
) -> np.ndarray:
    """Opacity of a digit scaled to ``width×height`` (before rotation), rotated by ``angle``."""
    small = Image.fromarray((digit * 255).astype(np.uint8))
    mask = small.resize((width, height), Image.Resampling.BICUBIC)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    if otype.style == "outline":
        solid = mask.point(lambda v: 255 if v > 100 else 0)
        mask = Image.fromarray(
            np.asarray(solid)
            - np.asarray(
                solid.filter(ImageFilter.MinFilter(max(3, (min(width, height) // 10) | 1)))
            )
        ).filter(ImageFilter.SMOOTH)
    a = np.asarray(mask, dtype=np.float32) / 255.0
    return np.clip((a - 0.2) / 0.5, 0.0, 1.0)


def _paint(
    canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int
) -> tuple[int, int, int, int] | None:
    """Composite ``colour`` with opacity ``alpha`` at (x, y); return the visible box
    (c0, r0, c1, r1) inclusive."""
    h, w = alpha.shape
    H, W = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return None
    a = alpha[cy0 - y : cy1 - y, cx0 - x : cx1 - x, None]
    region = canvas[cy0:cy1, cx0:cx1]
    canvas[cy0:cy1, cx0:cx1] = region * (1 - a) + colour * a
    rows, cols = np.nonzero(a[..., 0] > 0.5)
    if len(rows) == 0:
        return None
    return (
        cx0 + int(cols.min()),
        cy0 + int(rows.min()),
        cx0 + int(cols.max()),
        cy0 + int(rows.max()),
    )


def _full_extent(alpha: np.ndarray) -> int:
    return int((alpha > 0.5).sum())


def _colour(rng: np.random.Generator, otype: ObjectType) -> np.ndarray:
    base = np.array(COLOURS[otype.colour], dtype=np.float32)
    return np.clip(base + rng.normal(0, 0.05, 3), 0, 1) * 255


def _save_jpeg(canvas: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path, quality=JPEG_QUALITY)


# ---------------------------------------------------------------------------------------------
# Source set: ImageNet folder format
# ---------------------------------------------------------------------------------------------


def _source_class(
    folder: Path,
    digits: Digits,
    candidates: np.ndarray,
    otype: ObjectType,
    rng: np.random.Generator,
    count: int,
    size: int,
    val: bool,
) -> int:
    """``count`` images of one class: one roughly centred object with jitter
    on a cluttered background."""
    folder.mkdir(parents=True)
    jitter = size // 8
    for n in range(count):
        canvas = np.asarray(
            _background(rng, size, size, int(rng.integers(0, 4))), dtype=np.float32
        ).copy()
        side = int(size * rng.uniform(0.45, 0.85))
        w, h = max(6, int(side * rng.uniform(0.8, 1.1))), side
        alpha = _alpha(
            digits.images[rng.choice(candidates)], otype, w, h, float(rng.uniform(-15, 15))
        )
        ah, aw = alpha.shape
        x = (size - aw) // 2 + int(rng.integers(-jitter, jitter + 1))
        y = (size - ah) // 2 + int(rng.integers(-jitter, jitter + 1))
        _paint(canvas, alpha, _colour(rng, otype), x, y)
        name = f"ILSVRC2012_val_{otype.wnid}_{n:04d}.JPEG" if val else f"{otype.wnid}_{n}.JPEG"
        _save_jpeg(canvas, folder / name)
    return count


def build_source(
    out: Path,
    digits: Digits,
    pool: np.ndarray,
    seed: int,
    train_per_class: int,
    val_per_class: int,
    size: int,
    workers: int,
) -> dict[str, int]:
    """``out/{train,val}/<wnid>/<wnid>_<n>.JPEG`` plus ``out/synsets.txt`` (wnid, name per line).

    Each (split, class) has its own generator seeded by (seed, split, class), so the result does not
    depend on ``workers`` (classes are drawn in parallel threads: PIL and NumPy release the GIL).
    """
    out.mkdir(parents=True)
    (out / "synsets.txt").write_text("".join(f"{t.wnid} {t.name}\n" for t in SOURCE_TYPES))
    counts = {}
    for k, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
        jobs = (
            delayed(_source_class)(
                out / split / otype.wnid,
                digits,
                pool[digits.labels[pool] == otype.digit],
                otype,
                np.random.default_rng([seed, k, c]),
                per_class,
                size,
                split == "val",
            )  # fmt: skip
            for c, otype in enumerate(SOURCE_TYPES)
        )
        done = Parallel(n_jobs=workers, prefer="threads", return_as="generator")(jobs)
        counts[split] = sum(
            tqdm(done, total=len(SOURCE_TYPES), desc=f"source {split}", leave=False)
        )
    return counts


# ---------------------------------------------------------------------------------------------
# Target set: Pascal VOC 2007 format
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One annotated image: ids, size and objects (class, 1-based inclusive box, flags)."""

    image_id: str
    width: int
    height: int
    objects: tuple[dict[str, Any], ...]


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / area


def render_scene(
    rng: np.random.Generator, digits: Digits, pool: np.ndarray, image_id: str, cfg: Any,
    size: tuple[int, int] | None = None, classes: dict[str, ObjectType] = TARGET_TYPES,
) -> tuple[np.ndarray, Scene]:  # fmt: skip
    """A cluttered scene with unlabelled distractors below 1–``max_objects`` annotated objects.

    ``size`` (width, height) fixes the canvas instead of drawing both sides in
    [``voc_size_min``, ``voc_size_max``]; ``classes`` maps the annotated class names to the object
    types that depict them (the VOC classes by default; the rehearsal mirror passes COCO's).
    """
    if size is None:
        width = int(rng.integers(cfg.voc_size_min, cfg.voc_size_max + 1))
        height = int(rng.integers(cfg.voc_size_min, cfg.voc_size_max + 1))
    else:
        width, height = size
    canvas = np.asarray(
        _background(rng, width, height, int(rng.integers(2, 8))), dtype=np.float32
    ).copy()
    short = min(width, height)
    for _ in range(int(rng.integers(0, cfg.max_distractors + 1))):
        otype = DISTRACTOR_TYPES[int(rng.integers(len(DISTRACTOR_TYPES)))]
        side = int(rng.uniform(0.12, 0.45) * short)
        candidates = pool[digits.labels[pool] == otype.digit]
        alpha = _alpha(
            digits.images[rng.choice(candidates)],
            otype,
            max(6, int(side * 0.8)),
            side,
            float(rng.uniform(-20, 20)),
        )
        _paint(
            canvas,
            alpha,
            _colour(rng, otype),
            int(rng.integers(-side // 3, width - side // 2)),
            int(rng.integers(-side // 3, height - side // 2)),
        )
    objects: list[dict[str, Any]] = []
    placed: list[tuple[int, int, int, int]] = []
    n_objects = int(rng.integers(1, cfg.max_objects + 1))
    attempts = 0
    while len(objects) < n_objects and attempts < 20 * n_objects:
        attempts += 1
        cls = list(classes)[int(rng.integers(len(classes)))]
        otype = classes[cls]
        side = int(
            np.exp(rng.uniform(np.log(cfg.object_min), np.log(cfg.object_max_fraction * short)))
        )
        w = max(6, int(side * rng.uniform(0.7, 1.0)))
        candidates = pool[digits.labels[pool] == otype.digit]
        alpha = _alpha(
            digits.images[rng.choice(candidates)], otype, w, side, float(rng.uniform(-20, 20))
        )
        ah, aw = alpha.shape
        x = int(rng.integers(-aw // 4, width - 3 * aw // 4 + 1))
        y = int(rng.integers(-ah // 4, height - 3 * ah // 4 + 1))
        proposal = (max(x, 0), max(y, 0), min(x + aw, width) - 1, min(y + ah, height) - 1)
        if any(_iou(proposal, p) > cfg.max_overlap for p in placed):
            continue
        full = _full_extent(alpha)
        box = _paint(canvas, alpha, _colour(rng, otype), x, y)
        if box is None:
            continue
        visible = _full_extent(alpha[max(0, -y) : height - y, max(0, -x) : width - x])
        truncated = visible < full
        c0, r0, c1, r1 = box
        difficult = min(c1 - c0 + 1, r1 - r0 + 1) < cfg.difficult_below or visible < 0.5 * full
        placed.append(box)
        objects.append(
            {
                "name": cls,
                "truncated": int(truncated),
                "difficult": int(difficult),
                "bndbox": (c0 + 1, r0 + 1, c1 + 1, r1 + 1),  # VOC: 1-based, inclusive
            }
        )
    return canvas, Scene(image_id, width, height, tuple(objects))


def voc_xml(scene: Scene) -> ET.ElementTree:
    """The official VOC annotation layout (folder, filename, source, size, segmented, objects)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{scene.image_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "oquab-repro mini (scikit-learn digits)"
    size = ET.SubElement(root, "size")
    for key, value in (("width", scene.width), ("height", scene.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in scene.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj["name"]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(obj["truncated"])
        ET.SubElement(node, "difficult").text = str(obj["difficult"])
        box = ET.SubElement(node, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["bndbox"], strict=True):
            ET.SubElement(box, key).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def _write_image_sets(base: Path, sets: dict[str, list[Scene]]) -> None:
    """``ImageSets/Main/<set>.txt`` and ``<cls>_<set>.txt`` (1 present, 0
    only difficult, -1 absent)."""
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True)
    for name, scenes in sets.items():
        (main / f"{name}.txt").write_text("".join(f"{s.image_id}\n" for s in scenes))
        for cls in VOC_CLASSES:
            lines = []
            for s in scenes:
                flags = [o["difficult"] for o in s.objects if o["name"] == cls]
                label = -1 if not flags else (0 if all(flags) else 1)
                lines.append(f"{s.image_id} {label:2d}\n")
            (main / f"{cls}_{name}.txt").write_text("".join(lines))


def build_voc(
    out: Path, digits: Digits, pools: tuple[np.ndarray, np.ndarray], seed: int, cfg: Any
) -> dict[str, list[Scene]]:
    """``out/VOCdevkit/VOC2007`` with JPEGImages, Annotations and ImageSets/Main."""
    rng = np.random.default_rng(seed)
    base = out / "VOCdevkit" / "VOC2007"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "Annotations").mkdir()
    scenes: dict[str, list[Scene]] = {"trainval": [], "test": []}
    counter = 0
    for split, n_images, pool in (
        ("trainval", cfg.voc_trainval, pools[0]),
        ("test", cfg.voc_test, pools[1]),
    ):
        for _ in tqdm(range(n_images), desc=f"voc {split}", leave=False):
            counter += 1
            canvas, scene = render_scene(rng, digits, pool, f"{counter:06d}", cfg)
            _save_jpeg(canvas, base / "JPEGImages" / f"{scene.image_id}.jpg")
            voc_xml(scene).write(base / "Annotations" / f"{scene.image_id}.xml", encoding="utf-8")
            scenes[split].append(scene)
    half = len(scenes["trainval"]) // 2
    sets = {"train": scenes["trainval"][:half], "val": scenes["trainval"][half:], **scenes}
    _write_image_sets(base, sets)
    return sets


def build_coco(out: Path, voc_root: Path, sets: dict[str, list[Scene]]) -> dict[str, int]:
    """COCO copy of the VOC target: trainval → ``train2014``, test → ``val2014``, instances JSON."""
    (out / "annotations").mkdir(parents=True)
    categories = [
        {"id": i + 1, "name": c, "supercategory": "digit"} for i, c in enumerate(VOC_CLASSES)
    ]
    cat_id = {c["name"]: c["id"] for c in categories}
    jpegs = voc_root / "VOCdevkit" / "VOC2007" / "JPEGImages"
    counts = {}
    ann_id = 0
    for voc_split, coco_split in (("trainval", "train2014"), ("test", "val2014")):
        (out / coco_split).mkdir()
        images, annotations = [], []
        for scene in sets[voc_split]:
            file_name = f"{scene.image_id}.jpg"
            shutil.copyfile(jpegs / file_name, out / coco_split / file_name)
            images.append(
                {
                    "id": int(scene.image_id),
                    "file_name": file_name,
                    "width": scene.width,
                    "height": scene.height,
                }
            )
            for obj in scene.objects:
                ann_id += 1
                xmin, ymin, xmax, ymax = obj["bndbox"]
                x, y, w, h = xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": int(scene.image_id),
                        "category_id": cat_id[obj["name"]],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "ignore": obj[
                            "difficult"
                        ],  # VOC's difficult: pycocotools skips ignored ground truth
                        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    }
                )
        doc = {
            "info": {
                "description": "oquab-repro mini target set (COCO copy of VOC2007-format data)"
            },
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (out / "annotations" / f"instances_{coco_split}.json").write_text(json.dumps(doc))
        counts[coco_split] = len(images)
    return counts


# ---------------------------------------------------------------------------------------------
# GAN sets
# ---------------------------------------------------------------------------------------------


def _draw_face(
    rng: np.random.Generator, digits: Digits, pool: np.ndarray, size: int, cfg: MiniDataParams
) -> tuple[np.ndarray, str]:
    """An LFW look-alike: one centred light-on-dark digit; its identity (folder) is the digit."""
    index = int(rng.choice(pool))
    identity = f"Digit_{DIGIT_NAMES[digits.labels[index]].title()}"
    canvas = np.full((size, size, 3), rng.uniform(10, 60), dtype=np.float32)
    digit_side = int(size * rng.uniform(0.7, 0.9))
    otype = ObjectType(int(digits.labels[index]), "red", "solid")
    alpha = _alpha(digits.images[index], otype, digit_side, digit_side, float(rng.uniform(-10, 10)))
    ah, aw = alpha.shape
    tone = np.array([230, 200, 170], dtype=np.float32) * rng.uniform(0.7, 1.0)
    _paint(canvas, alpha, tone, (size - aw) // 2, (size - ah) // 2)
    return canvas, identity


def _draw_scene(
    rng: np.random.Generator, digits: Digits, pool: np.ndarray, size: int, cfg: MiniDataParams
) -> tuple[np.ndarray, str]:
    """An LSUN-bedroom look-alike: a small cluttered scene drawn at twice the size, downsampled."""
    side = 2 * size
    scene = {"voc_size_min": side, "voc_size_max": side, "object_min": max(6, side // 8)}
    scene_cfg = cfg.model_copy(update=scene)
    canvas, _ = render_scene(rng, digits, pool, "", scene_cfg)
    image = Image.fromarray(canvas.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32), "bedroom"


GAN_DRAWERS = {"faces": _draw_face, "scenes": _draw_scene}
"""How each kind of GAN set of params.GAN_DATASETS is drawn offline: (rng, digits, pool, side, cfg)
→ (H×W×3 image, identity folder)."""


def build_gan(
    out: Path, name: str, digits: Digits, seed: int, n_images: int, size: int, cfg: MiniDataParams
) -> int:
    """The GAN image set ``name`` (params.GAN_DATASETS): a folder, one subfolder per identity."""
    if name not in GAN_DATASETS:
        raise ValueError(
            f"unknown GAN image set '{name}': declare it in params.GAN_DATASETS "
            f"(known: {list(GAN_DATASETS)})"
        )
    draw = GAN_DRAWERS[GAN_DATASETS[name]]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    pool = np.arange(len(digits.labels))
    for n in tqdm(range(n_images), desc=f"gan {name}", leave=False):
        canvas, identity = draw(rng, digits, pool, size, cfg)
        folder = out / identity
        folder.mkdir(exist_ok=True)
        _save_jpeg(canvas, folder / f"{identity}_{n:05d}.jpg")
    return n_images


# ---------------------------------------------------------------------------------------------
# Action set: Pascal VOC 2012 format (ImageSets/Action)
# ---------------------------------------------------------------------------------------------

# Action k ↔ digit k painted solid green: the person's "pose".
ACTION_TYPES: dict[str, ObjectType] = {
    a: ObjectType(k, "green", "solid") for k, a in enumerate(VOC_ACTIONS)
}


def _action_xml(
    image_id: str, width: int, height: int, persons: list[tuple[str, tuple[int, ...]]]
) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for action, box in persons:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = "person"
        bnd = ET.SubElement(node, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bnd, key).text = str(value)
        acts = ET.SubElement(node, "actions")
        for a in VOC_ACTIONS:
            ET.SubElement(acts, a).text = str(int(a == action))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def build_actions(out: Path, digits: Digits, pool: np.ndarray, seed: int, cfg: Any) -> int:
    """``out/VOCdevkit/VOC2012`` with 1–3 persons per image, each doing one of the 10 actions."""
    rng = np.random.default_rng(seed)
    base = out / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "Annotations").mkdir()
    records: list[tuple[str, list[str]]] = []
    for n in tqdm(range(cfg.action_trainval), desc="voc2012 actions", leave=False):
        image_id = f"2012_{n + 1:06d}"
        width = int(rng.integers(cfg.voc_size_min, cfg.voc_size_max + 1))
        height = int(rng.integers(cfg.voc_size_min, cfg.voc_size_max + 1))
        canvas = np.asarray(
            _background(rng, width, height, int(rng.integers(2, 8))), dtype=np.float32
        ).copy()
        persons: list[tuple[str, tuple[int, ...]]] = []
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 4)) * 10):
            if len(persons) == 3 or (persons and rng.random() < 0.5):
                break
            action = VOC_ACTIONS[int(rng.integers(len(VOC_ACTIONS)))]
            otype = ACTION_TYPES[action]
            side = int(rng.uniform(0.3, 0.6) * min(width, height))
            candidates = pool[digits.labels[pool] == otype.digit]
            alpha = _alpha(
                digits.images[rng.choice(candidates)],
                otype,
                max(6, int(side * 0.8)),
                side,
                float(rng.uniform(-15, 15)),
            )
            ah, aw = alpha.shape
            x, y = (
                int(rng.integers(0, max(1, width - aw))),
                int(rng.integers(0, max(1, height - ah))),
            )
            proposal = (x, y, min(x + aw, width) - 1, min(y + ah, height) - 1)
            if any(_iou(proposal, p) > 0.1 for p in placed):
                continue
            box = _paint(canvas, alpha, _colour(rng, otype), x, y)
            if box is None:
                continue
            placed.append(box)
            persons.append((action, (box[0] + 1, box[1] + 1, box[2] + 1, box[3] + 1)))
        _save_jpeg(canvas, base / "JPEGImages" / f"{image_id}.jpg")
        _action_xml(image_id, width, height, persons).write(
            base / "Annotations" / f"{image_id}.xml", encoding="utf-8"
        )
        records.append((image_id, [a for a, _ in persons]))
    folder = base / "ImageSets" / "Action"
    folder.mkdir(parents=True)
    half = len(records) // 2
    for name, subset in (("train", records[:half]), ("val", records[half:]), ("trainval", records)):
        (folder / f"{name}.txt").write_text("".join(f"{i}\n" for i, _ in subset))
        for a in (
            VOC_ACTIONS
        ):  # official per-action files: one line per person (image id, person index, ±1)
            lines = [
                f"{i} {k + 1} {1 if act == a else -1:2d}\n"
                for i, acts in subset
                for k, act in enumerate(acts)
            ]
            (folder / f"{a}_{name}.txt").write_text("".join(lines))
    return len(records)


# ---------------------------------------------------------------------------------------------
# Whole build
# ---------------------------------------------------------------------------------------------


def build_mini(staging: Path, cfg: MiniDataParams, seed: int) -> dict[str, Any]:
    """Build every mini dataset under
    ``staging/{imagenet,voc,coco,gan/<name>}``; return the counts."""
    digits = Digits.load()
    source_pool, trainval_pool, test_pool = digits.pools(seed, tuple(cfg.pool_fractions))
    counts: dict[str, Any] = {}
    source = build_source(
        staging / "imagenet", digits, source_pool, seed + 1,
        cfg.source_train_per_class, cfg.source_val_per_class, cfg.source_size, cfg.workers,
    )  # fmt: skip
    counts.update({f"imagenet_{k}_images": v for k, v in source.items()})
    counts["imagenet_classes"] = len(SOURCE_TYPES)
    sets = build_voc(staging / "voc", digits, (trainval_pool, test_pool), seed + 2, cfg)
    counts.update({f"voc2007_{k}_images": len(v) for k, v in sets.items()})
    counts["voc2007_trainval_objects"] = sum(len(s.objects) for s in sets["trainval"])
    counts["voc2007_test_objects"] = sum(len(s.objects) for s in sets["test"])
    counts["voc2012_action_images"] = build_actions(
        staging / "voc", digits, trainval_pool, seed + 3, cfg
    )
    counts.update(
        {
            f"coco_{k}_images": v
            for k, v in build_coco(staging / "coco", staging / "voc", sets).items()
        }
    )
    for k, name in enumerate(GAN_DATASETS):
        counts[f"gan_{name}_images"] = build_gan(
            staging / "gan" / name, name, digits, seed + 10 + k, cfg.gan_images, cfg.gan_size, cfg
        )
    return counts


def class_sets(seed: int) -> dict[str, list[str]]:
    """Mini analogues of the Ch. 3 source sets (wnid lists over :data:`SOURCE_TYPES`), keyed by
    the source networks' names (params.PRETRAIN_SOURCES):

    - ``in1000c`` (the thesis' 1000C, ILSVRC-like, holds the target categories): the 60 solid types;
    - ``in1000r`` (1000R, random, seeded): 60 types drawn from all 120;
    - ``in1512`` (1512: 1000C + the subtrees of target-like categories): the solid types plus the
      outline variants of the target colours (red, blue), 80 types.
    """
    solid = [t.wnid for t in SOURCE_TYPES if t.style == "solid"]
    everything = [t.wnid for t in SOURCE_TYPES]
    rng = np.random.default_rng(seed)
    extra = [t.wnid for t in SOURCE_TYPES if t.style == "outline" and t.colour in ("red", "blue")]
    return {
        "in1000c": sorted(solid),
        "in1000r": sorted(rng.choice(everything, size=len(solid), replace=False).tolist()),
        "in1512": sorted(solid + extra),
    }
