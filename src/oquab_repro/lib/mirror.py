"""A rehearsal mirror of every full-profile input: small archives in each official layout.

``oquab-repro mirror build DIR`` writes, under ``DIR/<host>/<path>`` of each official URL (the
layout ``data.full.mirror`` expects, see :mod:`oquab_repro.lib.download`), archives whose file
names, folder structure and annotation formats are those of the official downloads, with few
images each:

==========================================  =====================================================
``thor.robots.ox.ac.uk/pascal/VOC/...``     VOC2007 trainval + test tars, VOC2012 trainval tar
                                            (Main, Action with 11 actions, Layout, Segmentation)
``images.cocodataset.org/...``              ``train2014.zip``, ``val2014.zip``,
                                            ``annotations_trainval2014.zip`` (instances with
                                            ``iscrowd`` RLE, captions, person keypoints)
``dl.yf.io/lsun/scenes/``                   ``bedroom_{train,val}_lmdb.zip`` (LMDB of WebP images)
``vis-www.cs.umass.edu/lfw/``               ``lfw-funneled.tgz`` (250×250, one folder per person)
``download.pytorch.org/models/``            ``resnet34-b627a593.pth`` (random weights)
``webdav.tuebingen.mpg.de/cause-effect/``   ``pairs.zip`` (pairNNNN.txt, _des.txt, pairmeta.txt,
                                            README; univariate and multivariate pairs)
``ILSVRC2012/``                             train tar of per-wnid tars, flat val tar, devkit
``fall11/fall11_whole.tar``                 the fall 2011 synsets 1000R / 1512 add (per-wnid tars)
``wordnet/``                                ``fall11_wnids.txt``, ``wordnet.is_a.txt``,
                                            ``words.txt``
``SHA256SUMS``                              sha256 of every file above (``sha256sum -c`` format)
==========================================  =====================================================

Images are drawn with :mod:`oquab_repro.lib.minidata` (digits painted on cluttered backgrounds) at
the official sizes (VOC/COCO about 500×375, LFW 250×250, LSUN short side 256, ImageNet's usual
shapes, including the CMYK, greyscale and PNG-named-JPEG files real ILSVRC-2012 has). The WordNet
is synthetic but shaped like the real one: the five 1512 roots with subtrees, ILSVRC leaves under
inner nodes, other fall 2011 synsets beside them. Everything is seeded and archives carry fixed
timestamps, so a build is byte-for-byte reproducible and so is its manifest.

``oquab-repro mirror serve DIR`` serves the tree over HTTP on 127.0.0.1 with ``Range`` support, so
the data stage's downloads resume, verify and extract exactly as they would from the real hosts.
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import io
import json
import logging
import random
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from PIL import Image

from oquab_repro.lib import minidata as M
from oquab_repro.lib.datasets import VOC_ACTIONS, VOC_CLASSES
from oquab_repro.lib.download import ARCHIVES, TUEBINGEN, Archive
from oquab_repro.lib.imagenet import FALL11_WHOLE, ILSVRC_ARCHIVES, SET_1512_ROOTS
from oquab_repro.lib.mirror_counts import ROOT_SHARES, MirrorCounts

log = logging.getLogger(__name__)

MANIFEST = "SHA256SUMS"
ILSVRC_DIR, FALL11_DIR, WORDNET_DIR = "ILSVRC2012", "fall11", "wordnet"
ENTITY = "n00001740"
VOC_ACTIONS_2012 = (*VOC_ACTIONS, "other")  # the devkit's 11th action, unused by Table 3.3
VOC_SHAPES = ((500, 375), (500, 333), (375, 500), (500, 400), (500, 281), (333, 500), (486, 500))
IMAGENET_SHAPES = (
    (500, 375),
    (500, 333),
    (375, 500),
    (500, 400),
    (400, 300),
    (500, 500),
    (333, 500),
    (640, 480),
    (320, 240),
)
COCO_SHAPES = ((640, 480), (640, 427), (480, 640), (640, 426), (500, 375), (427, 640), (612, 612))
COCO_SUPERCATEGORIES = (  # (first id, name): COCO groups its category ids by supercategory
    (1, "person"),
    (2, "vehicle"),
    (10, "outdoor"),
    (16, "animal"),
    (27, "accessory"),
    (34, "sports"),
    (44, "kitchen"),
    (52, "food"),
    (62, "furniture"),
    (72, "electronic"),
    (78, "appliance"),
    (84, "indoor"),
)


# ---------------------------------------------------------------------------------------------
# Deterministic archive writers
# ---------------------------------------------------------------------------------------------

Entry = tuple[str, bytes | None]  # (name inside the archive, bytes; None for a folder)


def _epoch(date: str) -> int:
    return calendar.timegm(time.strptime(date, "%Y-%m-%d"))


def _with_folders(entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by name, each parent folder listed once before its
    content (as `tar c DIR` does)."""
    out: dict[str, bytes | None] = {}
    for name, data in sorted(entries):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            out.setdefault("/".join(parts[:depth]) + "/", None)
        out[name] = data
    return sorted(out.items(), key=lambda item: item[0].rstrip("/"))


def write_tar(path: Path, entries: Iterable[Entry], date: str, gz: bool = False) -> None:
    """A tar (or tar.gz) with fixed owner, modes and timestamps: the same bytes on every build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mtime = _epoch(date)
    with open(path, "wb") as raw:
        stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime) if gz else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in _with_folders(entries):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.mtime, info.uid, info.gid = mtime, 0, 0
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
        if gz:
            stream.close()


def tar_bytes(entries: Iterable[Entry], date: str) -> bytes:
    """An uncompressed tar in memory (the per-wnid tars inside ImageNet's
    train and fall 2011 tars)."""
    buf = io.BytesIO()
    mtime = _epoch(date)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data or b""), mtime, 0o644
            tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def write_zip(path: Path, entries: Iterable[Entry], date: str) -> None:
    """A zip with fixed timestamps; JPEG/WebP/LMDB members stored, text members deflated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strptime(date, "%Y-%m-%d")[:6]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in _with_folders(entries):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o40755 if data is None else 0o100644) << 16
            binary = name.endswith((".jpg", ".JPEG", ".mdb"))
            info.compress_type = (
                zipfile.ZIP_STORED if data is None or binary else zipfile.ZIP_DEFLATED
            )
            archive.writestr(info, data or b"")


def jpeg(canvas: np.ndarray | Image.Image, quality: int = 90, mode: str = "RGB") -> bytes:
    image = (
        canvas
        if isinstance(canvas, Image.Image)
        else Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    )
    buf = io.BytesIO()
    image.convert(mode).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Drawing (lib/minidata.py) at official sizes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SceneConfig:
    """The scene knobs of :func:`minidata.render_scene`, sized for 500-px images."""

    max_objects: int = 5
    max_distractors: int = 3
    object_min: int = 20
    object_max_fraction: float = 0.6
    max_overlap: float = 0.3
    difficult_below: int = 24
    voc_size_min: int = 0  # unused: sizes are given per image
    voc_size_max: int = 0


SCENE = _SceneConfig()


def _scene(
    rng: np.random.Generator,
    digits: M.Digits,
    shapes: tuple[tuple[int, int], ...],
    classes: dict[str, M.ObjectType],
) -> tuple[np.ndarray, M.Scene]:
    size = shapes[int(rng.integers(len(shapes)))]
    return M.render_scene(
        rng, digits, np.arange(len(digits.labels)), "", SCENE, size=size, classes=classes
    )


def _object_image(
    rng: np.random.Generator, digits: M.Digits, otype: M.ObjectType, size: tuple[int, int]
) -> np.ndarray:
    """One roughly centred object on a cluttered background (an ImageNet-like photo)."""
    width, height = size
    canvas = np.asarray(
        M._background(rng, width, height, int(rng.integers(0, 5))), dtype=np.float32
    ).copy()
    side = int(min(width, height) * rng.uniform(0.4, 0.8))
    candidates = np.flatnonzero(digits.labels == otype.digit)
    # drawn at 64 px and enlarged: minidata's outline filter costs O(side²) per pixel at full size
    small = M._alpha(
        digits.images[rng.choice(candidates)],
        otype,
        int(64 * rng.uniform(0.7, 1.0)),
        64,
        float(rng.uniform(-15, 15)),
    )
    scale = side / 64
    size = (max(8, int(small.shape[1] * scale)), max(8, int(small.shape[0] * scale)))
    alpha = (
        np.asarray(
            Image.fromarray((small * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR),
            dtype=np.float32,
        )
        / 255
    )
    ah, aw = alpha.shape
    M._paint(
        canvas,
        alpha,
        M._colour(rng, otype),
        (width - aw) // 2 + int(rng.integers(-width // 8, width // 8 + 1)),
        (height - ah) // 2 + int(rng.integers(-height // 8, height // 8 + 1)),
    )
    return canvas


def _parallel(jobs: Iterable[Any], workers: int) -> list[Any]:
    return list(Parallel(n_jobs=workers, prefer="threads")(jobs))


# ---------------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------------


def _voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved), 255 = the white 'void' border colour."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _segmentation(scene: M.Scene, instances: bool) -> bytes:
    """A palette PNG as in SegmentationClass / SegmentationObject: filled boxes, a void outline."""
    mask = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for k, obj in enumerate(scene.objects, start=1):
        x0, y0, x1, y1 = (v - 1 for v in obj["bndbox"])
        mask[y0 : y1 + 1, x0 : x1 + 1] = k if instances else VOC_CLASSES.index(obj["name"]) + 1
        mask[y0, x0 : x1 + 1] = mask[y1, x0 : x1 + 1] = mask[y0 : y1 + 1, x0] = mask[
            y0 : y1 + 1, x1
        ] = 255
    image = Image.fromarray(mask, mode="P")
    image.putpalette(_voc_palette())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _voc_xml(
    scene: M.Scene,
    folder: str,
    database: str,
    segmented: bool,
    persons: list[dict[str, Any]] | None = None,
) -> bytes:
    """The official annotation layout: source/owner, size, segmented, objects with
    pose/flags/box."""
    lines = [
        "<annotation>",
        f"\t<folder>{folder}</folder>",
        f"\t<filename>{scene.image_id}.jpg</filename>",
        "\t<source>",
        f"\t\t<database>{database}</database>",
        "\t\t<annotation>PASCAL VOC</annotation>",
        "\t\t<image>flickr</image>",
        "\t</source>",
        "\t<owner>",
        "\t\t<flickrid>oquab-repro mirror</flickrid>",
        "\t\t<name>?</name>",
        "\t</owner>",
        "\t<size>",
        f"\t\t<width>{scene.width}</width>",
        f"\t\t<height>{scene.height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        f"\t<segmented>{int(segmented)}</segmented>",
    ]
    for obj in scene.objects:
        x0, y0, x1, y1 = obj["bndbox"]
        lines += [
            "\t<object>",
            f"\t\t<name>{obj['name']}</name>",
            f"\t\t<pose>{obj.get('pose', 'Unspecified')}</pose>",
            f"\t\t<truncated>{obj['truncated']}</truncated>",
            f"\t\t<difficult>{obj['difficult']}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
        ]
        lines += obj.get("extra", [])
        lines.append("\t</object>")
    lines.append("</annotation>\n")
    return "\n".join(lines).encode()


def _with_pose(rng: np.random.Generator, scene: M.Scene) -> M.Scene:
    poses = ("Unspecified", "Frontal", "Left", "Right", "Rear")
    objects = tuple({**o, "pose": poses[int(rng.integers(len(poses)))]} for o in scene.objects)
    return M.Scene(scene.image_id, scene.width, scene.height, objects)


def _person_layout(obj: dict[str, Any]) -> list[str]:
    """A ``<part>`` (head) inside a person box, as the Layout annotations have."""
    x0, y0, x1, y1 = obj["bndbox"]
    w, h = x1 - x0, y1 - y0
    hx0, hy0, hx1, hy1 = x0 + w // 3, y0, x0 + 2 * w // 3, y0 + max(1, h // 4)
    return [
        "\t\t<part>",
        "\t\t\t<name>head</name>",
        "\t\t\t<bndbox>",
        f"\t\t\t\t<xmin>{hx0}</xmin>",
        f"\t\t\t\t<ymin>{hy0}</ymin>",
        f"\t\t\t\t<xmax>{hx1}</xmax>",
        f"\t\t\t\t<ymax>{hy1}</ymax>",
        "\t\t\t</bndbox>",
        "\t\t</part>",
    ]


def _draw_voc(ids: list[str], rng_seed: list[int], digits: M.Digits) -> list[tuple[M.Scene, bytes]]:
    rng = np.random.default_rng(rng_seed)
    out = []
    for image_id in ids:
        canvas, scene = _scene(rng, digits, VOC_SHAPES, M.TARGET_TYPES)
        scene = _with_pose(rng, M.Scene(image_id, scene.width, scene.height, scene.objects))
        objects = tuple(
            {**o, "extra": _person_layout(o) if o["name"] == "person" else []}
            for o in scene.objects
        )
        out.append(
            (
                M.Scene(image_id, scene.width, scene.height, objects),
                jpeg(canvas, quality=int(rng.integers(75, 95))),
            )
        )
    return out


def _main_sets(sets: dict[str, list[M.Scene]]) -> list[Entry]:
    """ImageSets/Main: ``<set>.txt`` and ``<class>_<set>.txt`` (1 present, 0
    only difficult, -1 absent)."""
    entries: list[Entry] = []
    for name, scenes in sets.items():
        entries.append(
            (f"ImageSets/Main/{name}.txt", "".join(f"{s.image_id}\n" for s in scenes).encode())
        )
        for cls in VOC_CLASSES:
            lines = []
            for s in scenes:
                flags = [o["difficult"] for o in s.objects if o["name"] == cls]
                lines.append(f"{s.image_id} {-1 if not flags else (0 if all(flags) else 1):2d}\n")
            entries.append((f"ImageSets/Main/{cls}_{name}.txt", "".join(lines).encode()))
    return entries


def _voc_entries(
    scenes: list[tuple[M.Scene, bytes]],
    folder: str,
    sets: dict[str, list[str]],
    segmented_every: int = 4,
) -> list[Entry]:
    """JPEGImages, Annotations, ImageSets/{Main,Layout,Segmentation},
    Segmentation{Class,Object} of one VOC year."""
    base = f"VOCdevkit/{folder}"
    by_id = {s.image_id: s for s, _ in scenes}
    entries: list[Entry] = []
    segmented = {s.image_id for k, (s, _) in enumerate(scenes) if k % segmented_every == 0}
    for scene, data in scenes:
        entries.append((f"{base}/JPEGImages/{scene.image_id}.jpg", data))
        entries.append(
            (
                f"{base}/Annotations/{scene.image_id}.xml",
                _voc_xml(scene, folder, f"The {folder} Database", scene.image_id in segmented),
            )
        )
        if scene.image_id in segmented:
            entries.append(
                (
                    f"{base}/SegmentationClass/{scene.image_id}.png",
                    _segmentation(scene, instances=False),
                )
            )
            entries.append(
                (
                    f"{base}/SegmentationObject/{scene.image_id}.png",
                    _segmentation(scene, instances=True),
                )
            )
    main = _main_sets({name: [by_id[i] for i in ids] for name, ids in sets.items()})
    entries += [(f"{base}/{name}", data) for name, data in main]
    for name, ids in sets.items():
        with_person = [i for i in ids if any(o["name"] == "person" for o in by_id[i].objects)]
        entries.append(
            (f"{base}/ImageSets/Layout/{name}.txt", "".join(f"{i}\n" for i in with_person).encode())
        )
        entries.append(
            (
                f"{base}/ImageSets/Segmentation/{name}.txt",
                "".join(f"{i}\n" for i in ids if i in segmented).encode(),
            )
        )
    return entries


def _split_ids(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    half = rng.permutation(len(ids))[: len(ids) // 2]
    train = sorted(ids[i] for i in half)
    return {"train": train, "val": sorted(set(ids) - set(train)), "trainval": sorted(ids)}


def build_voc2007(out: Path, counts: MirrorCounts, digits: M.Digits) -> list[Path]:
    """VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar (both unpack into
    VOCdevkit/VOC2007)."""
    rng = np.random.default_rng([counts.seed, 1])
    numbers = np.sort(
        rng.choice(
            np.arange(1, 10_000), counts.voc2007_trainval + counts.voc2007_test, replace=False
        )
    )
    test_pick = set(rng.permutation(len(numbers))[: counts.voc2007_test].tolist())
    trainval = [f"{n:06d}" for k, n in enumerate(numbers) if k not in test_pick]
    test = [f"{n:06d}" for k, n in enumerate(numbers) if k in test_pick]
    written = []
    for ids, sets, name, k in (
        (trainval, _split_ids(trainval, rng), "voc2007_trainval", 2),
        (test, {"test": test}, "voc2007_test", 3),
    ):
        scenes = _draw_voc(ids, [counts.seed, k], digits)
        path = out / ARCHIVES[name].mirror_path
        write_tar(path, _voc_entries(scenes, "VOC2007", sets), "2007-11-06")
        written.append(path)
    return written


def _action_scene(
    rng: np.random.Generator, digits: M.Digits, image_id: str
) -> tuple[M.Scene, bytes]:
    """An action image: 1–3 persons (green digits = the action), each with
    ``<actions>`` and ``<point>``."""
    classes = {a: M.ObjectType(k % 10, "green", "solid") for k, a in enumerate(VOC_ACTIONS_2012)}
    canvas, scene = _scene(rng, digits, VOC_SHAPES, classes)
    persons = []
    for obj in scene.objects[:3]:
        x0, y0, x1, y1 = obj["bndbox"]
        flags = "".join(f"\t\t\t<{a}>{int(a == obj['name'])}</{a}>\n" for a in VOC_ACTIONS_2012)
        extra = [
            "\t\t<actions>",
            flags.rstrip("\n"),
            "\t\t</actions>",
            "\t\t<point>",
            f"\t\t\t<x>{(x0 + x1) // 2}</x>",
            f"\t\t\t<y>{(y0 + y1) // 2}</y>",
            "\t\t</point>",
        ]
        persons.append({**obj, "name": "person", "action": obj["name"], "extra": extra})
    return M.Scene(image_id, scene.width, scene.height, tuple(persons)), jpeg(
        canvas, quality=int(rng.integers(75, 95))
    )


def _action_sets(scenes: list[M.Scene], rng: np.random.Generator) -> list[Entry]:
    """ImageSets/Action: ``<set>.txt`` and ``<action>_<set>.txt`` (image, person index, ±1)."""
    sets = _split_ids([s.image_id for s in scenes], rng)
    by_id = {s.image_id: s for s in scenes}
    entries: list[Entry] = []
    for name, ids in sets.items():
        entries.append((f"ImageSets/Action/{name}.txt", "".join(f"{i}\n" for i in ids).encode()))
        for action in VOC_ACTIONS_2012:
            lines = [
                f"{i} {k} {1 if p['action'] == action else -1:2d}\n"
                for i in ids
                for k, p in enumerate(by_id[i].objects, start=1)
            ]
            entries.append((f"ImageSets/Action/{action}_{name}.txt", "".join(lines).encode()))
    return entries


def build_voc2012(out: Path, counts: MirrorCounts, digits: M.Digits) -> list[Path]:
    """VOCtrainval_11-May-2012.tar: detection images (Main) and action images (Action), one tree."""
    rng = np.random.default_rng([counts.seed, 4])
    det_ids = [f"{2008 + k % 4}_{k:06d}" for k in range(1, counts.voc2012_trainval + 1)]
    scenes = _draw_voc(det_ids, [counts.seed, 5], digits)
    entries = _voc_entries(scenes, "VOC2012", _split_ids(det_ids, rng))
    base = "VOCdevkit/VOC2012"
    actions = [
        _action_scene(rng, digits, f"{2010 + k % 2}_{100000 + k:06d}")
        for k in range(counts.voc2012_actions)
    ]
    for scene, data in actions:
        entries.append((f"{base}/JPEGImages/{scene.image_id}.jpg", data))
        entries.append(
            (
                f"{base}/Annotations/{scene.image_id}.xml",
                _voc_xml(scene, "VOC2012", "The VOC2012 Database", False),
            )
        )
    entries += [
        (f"{base}/{name}", data) for name, data in _action_sets([s for s, _ in actions], rng)
    ]
    path = out / ARCHIVES["voc2012_trainval"].mirror_path
    write_tar(path, entries, "2012-05-11")
    return [path]


# ---------------------------------------------------------------------------------------------
# COCO 2014
# ---------------------------------------------------------------------------------------------


def coco_categories() -> list[dict[str, Any]]:
    """COCO's 80 categories with their official (non-contiguous) ids, names and supercategories."""
    from torchvision.models._meta import _COCO_CATEGORIES

    def supercategory(cid: int) -> str:
        return [name for first, name in COCO_SUPERCATEGORIES if first <= cid][-1]

    return [
        {"supercategory": supercategory(i), "id": i, "name": n}
        for i, n in enumerate(_COCO_CATEGORIES)
        if i and n != "N/A"
    ]


def _rle(box: list[float], height: int, width: int) -> dict[str, Any]:
    """Uncompressed (column-major) RLE of a filled box, the
    ``segmentation`` of a crowd annotation."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x, y, w, h = (int(round(v)) for v in box)
    mask[y : y + h, x : x + w] = 1
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
    return {"counts": np.diff(np.concatenate(([0], changes))).tolist(), "size": [height, width]}


KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


def _coco_split(
    split: str, ids: list[int], rng: np.random.Generator, digits: M.Digits, first_ann: int
) -> tuple[list[Entry], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Images (zip entries) and the instances, captions and person-keypoint records of one split."""
    cats = coco_categories()
    classes = {c["name"]: M.SOURCE_TYPES[k] for k, c in enumerate(cats)}
    cat_id = {c["name"]: c["id"] for c in cats}
    entries, images, annotations, captions, keypoints = [], [], [], [], []
    ann_id = first_ann
    for k, image_id in enumerate(ids):
        file_name = f"COCO_{split}_{image_id:012d}.jpg"
        canvas, scene = _scene(rng, digits, COCO_SHAPES, classes)
        grey = k % 11 == 5  # COCO has greyscale JPEGs too
        entries.append(
            (
                f"{split}/{file_name}",
                jpeg(canvas, quality=int(rng.integers(80, 95)), mode="L" if grey else "RGB"),
            )
        )
        images.append(
            {
                "license": int(rng.integers(1, 9)),
                "file_name": file_name,
                "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
                "height": scene.height,
                "width": scene.width,
                "date_captured": "2013-11-14 16:28:13",
                "flickr_url": f"http://farm4.staticflickr.com/0000/{image_id}.jpg",
                "id": image_id,
            }
        )
        captions += [
            {
                "image_id": image_id,
                "id": 700000 + 5 * k + c,
                "caption": f"A picture with {len(scene.objects)} objects.",
            }
            for c in range(5)
        ]
        if k % 9 == 4:
            continue  # an image without annotations (COCO has ~1% of them)
        for n, obj in enumerate(scene.objects):
            x0, y0, x1, y1 = obj["bndbox"]
            box = [float(x0 - 1), float(y0 - 1), float(x1 - x0 + 1), float(y1 - y0 + 1)]
            crowd = n == 0 and k % 5 == 2
            ann_id += 1
            polygon = [
                [
                    box[0],
                    box[1],
                    box[0] + box[2],
                    box[1],
                    box[0] + box[2],
                    box[1] + box[3],
                    box[0],
                    box[1] + box[3],
                ]
            ]
            record = {
                "segmentation": _rle(box, scene.height, scene.width) if crowd else polygon,
                "area": box[2] * box[3],
                "iscrowd": int(crowd),
                "image_id": image_id,
                "bbox": box,
                "category_id": cat_id[obj["name"]],
                "id": ann_id,
            }
            annotations.append(record)
            if obj["name"] == "person" and not crowd:
                points = [
                    v for _ in KEYPOINTS for v in (box[0] + box[2] / 2, box[1] + box[3] / 2, 2)
                ]
                keypoints.append({**record, "num_keypoints": len(KEYPOINTS), "keypoints": points})
    return entries, {"images": images, "annotations": annotations}, captions, keypoints


def _coco_doc(
    kind: str,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]] | None,
) -> bytes:
    doc: dict[str, Any] = {
        "info": {
            "description": "This is stable 1.0 version of the 2014 MS COCO dataset.",
            "url": "http://mscoco.org",
            "version": "1.0",
            "year": 2014,
            "contributor": "Microsoft COCO group",
            "date_created": "2015-01-27 09:11:52.357475",
        },
        "images": images,
        "licenses": [
            {
                "url": "http://creativecommons.org/licenses/by/2.0/",
                "id": i,
                "name": "Attribution License",
            }
            for i in range(1, 9)
        ],
        "type": kind,
        "annotations": annotations,
    }
    if categories is not None:
        doc["categories"] = categories
    return json.dumps(doc).encode()


def build_coco(out: Path, counts: MirrorCounts, digits: M.Digits) -> list[Path]:
    """train2014.zip, val2014.zip and annotations_trainval2014.zip
    (instances, captions, keypoints)."""
    rng = np.random.default_rng([counts.seed, 6])
    numbers = rng.choice(np.arange(1, 600_000), counts.coco_train + counts.coco_val, replace=False)
    splits = {
        "train2014": sorted(numbers[: counts.coco_train].tolist()),
        "val2014": sorted(numbers[counts.coco_train :].tolist()),
    }
    person = [c for c in coco_categories() if c["name"] == "person"]
    person_kp = [
        {
            **person[0],
            "keypoints": list(KEYPOINTS),
            "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13]],
        }
    ]
    notes: list[Entry] = []
    written = []
    first = 0
    for split, ids in splits.items():
        entries, instances, captions, keypoints = _coco_split(split, ids, rng, digits, first)
        first += 100_000
        key = "coco2014_train" if split == "train2014" else "coco2014_val"
        path = out / ARCHIVES[key].mirror_path
        write_zip(path, entries, "2014-08-01")
        written.append(path)
        notes.append(
            (
                f"annotations/instances_{split}.json",
                _coco_doc(
                    "instances", instances["images"], instances["annotations"], coco_categories()
                ),
            )
        )
        notes.append(
            (
                f"annotations/captions_{split}.json",
                _coco_doc("captions", instances["images"], captions, None),
            )
        )
        kp_images = instances["images"]
        notes.append(
            (
                f"annotations/person_keypoints_{split}.json",
                _coco_doc("instances", kp_images, keypoints, person_kp),
            )
        )
    path = out / ARCHIVES["coco2014_annotations"].mirror_path
    write_zip(path, notes, "2015-01-27")
    return [*written, path]


# ---------------------------------------------------------------------------------------------
# GAN sets: LFW (funneled tgz), LSUN bedroom (LMDB zips)
# ---------------------------------------------------------------------------------------------

FIRST = (
    "Aaron",
    "Abel",
    "Ada",
    "Adrien",
    "Aiko",
    "Alba",
    "Ana",
    "Bao",
    "Bruno",
    "Carla",
    "Chen",
    "Dara",
    "Eli",
    "Femi",
    "Gus",
    "Hana",
)
LAST = (
    "Eckhart",
    "Pacheco",
    "Lovelace",
    "Brody",
    "Sato",
    "Ruiz",
    "Ortiz",
    "Nguyen",
    "Ganz",
    "Bruni",
    "Wei",
    "Khan",
    "Roth",
    "Kuti",
    "Lind",
    "Mori",
)


def _face(rng: np.random.Generator, digits: M.Digits, identity: int, size: int = 250) -> np.ndarray:
    """A centred light 'face' (the person's digit) on a darker background,
    as funneled LFW crops are."""
    canvas = np.asarray(M._background(rng, size, size, 2), dtype=np.float32).copy() * 0.5
    otype = M.ObjectType(identity % 10, "yellow", "solid")
    side = int(size * rng.uniform(0.45, 0.6))
    alpha = M._alpha(
        digits.images[rng.choice(np.flatnonzero(digits.labels == otype.digit))],
        otype,
        side,
        side,
        float(rng.uniform(-8, 8)),
    )
    ah, aw = alpha.shape
    M._paint(
        canvas,
        alpha,
        np.array([230, 200, 170], dtype=np.float32) * rng.uniform(0.7, 1.0),
        (size - aw) // 2,
        (size - ah) // 2,
    )
    return canvas


def build_lfw(out: Path, counts: MirrorCounts, digits: M.Digits) -> list[Path]:
    """lfw-funneled.tgz: ``lfw_funneled/<First_Last>/<First_Last>_NNNN.jpg`` at 250×250."""
    rng = np.random.default_rng([counts.seed, 7])
    entries: list[Entry] = []
    names = sorted(
        {
            f"{FIRST[i % len(FIRST)]}_{LAST[(i * 7) % len(LAST)]}"
            + ("" if i < len(FIRST) else f"_{i}")
            for i in range(counts.lfw_people)
        }
    )
    for identity, name in enumerate(names):
        for n in range(1, int(rng.integers(1, 5)) + 1):
            entries.append(
                (f"lfw_funneled/{name}/{name}_{n:04d}.jpg", jpeg(_face(rng, digits, identity)))
            )
    path = out / ARCHIVES["lfw_funneled"].mirror_path
    write_tar(path, entries, "2007-10-01", gz=True)
    return [path]


def _lmdb_zip(path: Path, db_name: str, images: list[tuple[bytes, bytes]], scratch: Path) -> None:
    """``<db_name>/data.mdb`` + ``lock.mdb``: an LMDB of WebP images keyed by 40-hex ids, zipped."""
    import lmdb

    folder = scratch / db_name
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(
        str(folder), map_size=max(1 << 20, 4 * sum(len(v) for _, v in images)), subdir=True
    )
    with env.begin(write=True) as txn:
        for key, value in images:
            txn.put(key, value)
    env.close()
    write_zip(
        path,
        [(f"{db_name}/{f}", (folder / f).read_bytes()) for f in ("data.mdb", "lock.mdb")],
        "2015-06-01",
    )


def build_lsun(out: Path, counts: MirrorCounts, digits: M.Digits, scratch: Path) -> list[Path]:
    """bedroom_train_lmdb.zip and bedroom_val_lmdb.zip as the LSUN download tool fetches them."""
    rng = np.random.default_rng([counts.seed, 8])
    written = []
    for split, n in (("train", counts.lsun_train), ("val", counts.lsun_val)):
        images = []
        for k in range(n):
            long = int(rng.integers(320, 460))
            shape = ((long, 256), (256, long))[int(rng.integers(2))]  # LSUN: short side 256
            canvas, _ = _scene(rng, digits, (shape,), M.TARGET_TYPES)
            buf = io.BytesIO()
            Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(
                buf, format="WEBP", quality=75
            )
            images.append(
                (hashlib.sha1(f"bedroom-{split}-{k}".encode()).hexdigest().encode(), buf.getvalue())
            )
        archive = Archive(f"http://dl.yf.io/lsun/scenes/bedroom_{split}_lmdb.zip", None, "")
        path = out / archive.mirror_path
        _lmdb_zip(path, f"bedroom_{split}_lmdb", sorted(images), scratch)
        written.append(path)
    return written


def build_resnet34(out: Path, counts: MirrorCounts) -> list[Path]:
    """torchvision's resnet34 state dict with seeded random weights,
    under torchvision's file name."""
    import torch
    from torchvision.models import resnet34

    torch.manual_seed(counts.seed)
    path = out / ARCHIVES["resnet34_imagenet"].mirror_path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet34().state_dict(), path)
    return [path]


# ---------------------------------------------------------------------------------------------
# Tübingen cause-effect pairs
# ---------------------------------------------------------------------------------------------

MECHANISMS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("tanh", np.tanh), ("cube", lambda x: x**3 / 3), ("exp", lambda x: np.exp(x / 2)),
    ("sine", lambda x: np.sin(2 * x)), ("square", lambda x: x**2),
)  # fmt: skip


def _format_rows(rows: np.ndarray, style: int) -> bytes:
    """Rows of numbers as the official files write them: spaces, tabs, or scientific notation."""
    sep = "\t" if style == 1 else " "
    fmt = "{:.6e}" if style == 2 else "{:.6g}"
    return "".join(sep.join(fmt.format(v) for v in row) + "\n" for row in rows).encode()


def _pair(
    rng: np.random.Generator, k: int, multivariate: bool
) -> tuple[np.ndarray, tuple[int, int, int, int], str]:
    n = int(rng.integers(200, 800))
    name, f = MECHANISMS[k % len(MECHANISMS)]
    dims = (2, 2) if multivariate else (1, 1)
    cause = rng.normal(size=(n, dims[0]))
    effect = np.column_stack(
        [f(cause.sum(axis=1) / dims[0]) + 0.3 * rng.normal(size=n) for _ in range(dims[1])]
    )
    if rng.random() < 0.5:  # written effect-first, as a share of the official pairs are
        return np.column_stack([effect, cause]), (dims[1] + 1, dims[1] + dims[0], 1, dims[1]), name
    return np.column_stack([cause, effect]), (1, dims[0], dims[0] + 1, dims[0] + dims[1]), name


def build_tuebingen(out: Path, counts: MirrorCounts) -> list[Path]:
    """pairs.zip: pairNNNN.txt, pairNNNN_des.txt, pairmeta.txt and README at the zip's top level."""
    rng = np.random.default_rng([counts.seed, 9])
    entries: list[Entry] = []
    meta, overview = [], []
    for k in range(1, counts.tuebingen_pairs + 1):
        multivariate = k % 6 == 0
        data, (c0, c1, e0, e1), mechanism = _pair(rng, k, multivariate)
        pid = f"{k:04d}"
        weight = (
            1.0 if k % 4 else 0.5
        )  # pairs from one source share a weight, as pairs 56-63 officially
        meta.append(f"{pid} {c0} {c1} {e0} {e1} {weight:g}\n")
        entries.append((f"pair{pid}.txt", _format_rows(data, k % 3)))
        entries.append(
            (
                f"pair{pid}_des.txt",
                (
                    f"Information for pair{pid}:\n\n"
                    "Synthetic pair of the oquab-repro rehearsal mirror: "
                    f"effect = {mechanism}(cause) + noise.\n"
                    f"cause: columns {c0}-{c1}\neffect: columns {e0}-{e1}\n\n"
                    f"ground truth: {'x --> y' if c0 == 1 else 'y --> x'}\n"
                ).encode(),
            )
        )
        overview.append(
            f"pair{pid}\t\tcolumns {c0}-{c1}\t\t\tcolumns {e0}-{e1}\t\t\t"
            f"mirror\t\t\t{'->' if c0 == 1 else '<-'}\n"
        )
    entries.append(("pairmeta.txt", "".join(meta).encode()))
    readme = (
        "=" * 146
        + "\nCause-effect pairs (oquab-repro rehearsal mirror, official v1.0 layout).\n"
        + "=" * 146
        + "\n\nMeta-data contains the following information:\n\n"
        "number of pair | 1st column of cause | last column of cause | "
        "1st column of effect | last column of effect | dataset weight\n\n"
        + ("=" * 146)
        + "\nOverview over all data pairs.\n\n"
        "\t\t\tvar 1\t\t\t\tvar 2\t\t\t\t\tdataset\t\t\tground truth\n\n" + "".join(overview)
    )
    entries.append(("README", readme.encode()))
    path = out / TUEBINGEN.mirror_path
    write_zip(path, entries, "2016-11-21")
    return [path]


# ---------------------------------------------------------------------------------------------
# ImageNet: ILSVRC-2012 archives, fall 2011 synsets, WordNet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticWordNet:
    """Synthetic synsets shaped like ImageNet's: ILSVRC leaves, the 1512 roots' subtrees, others."""

    ilsvrc: list[str]
    fall11_extra: list[str]  # fall 2011 synsets outside ILSVRC-2012 (subtrees incl. roots, others)
    is_a: list[tuple[str, str]]
    words: dict[str, str]

    @property
    def fall11(self) -> list[str]:
        return sorted(self.ilsvrc + self.fall11_extra)


def _subtree_sizes(total: int) -> dict[str, int]:
    """The thesis' 276 / 165 / 48 / 18 / 5 split of 512, scaled to
    ``total`` (each root at least 1)."""
    raw = {
        r: max(1, round(total * share / sum(ROOT_SHARES.values())))
        for r, share in ROOT_SHARES.items()
    }
    first = next(iter(raw))
    raw[first] += total - sum(raw.values())
    return raw


def synthetic_wordnet(counts: MirrorCounts) -> SyntheticWordNet:
    rng = random.Random(counts.seed)
    pool = iter(
        rng.sample(
            range(1_000_000, 15_000_000),
            counts.imagenet_classes + counts.fall11_subtree + counts.fall11_other + 64,
        )
    )
    taken = {int(r[1:]) for r in SET_1512_ROOTS} | {int(ENTITY[1:])}

    def wnid() -> str:
        while (n := next(pool)) in taken:
            pass
        taken.add(n)
        return f"n{n:08d}"

    inner = [wnid() for _ in range(8)]
    is_a = [(ENTITY, node) for node in inner]
    ilsvrc = [wnid() for _ in range(counts.imagenet_classes)]
    is_a += [(inner[k % len(inner)], w) for k, w in enumerate(ilsvrc)]
    extra: list[str] = []
    for k, (root, size) in enumerate(_subtree_sizes(counts.fall11_subtree).items()):
        is_a.append((inner[k], root))
        members = [root]
        for _ in range(size - 1):
            child = wnid()
            is_a.append(
                (members[rng.randrange(len(members))], child)
            )  # a random tree below the root
            members.append(child)
        extra += members
        is_a += [
            (root, w) for w in ilsvrc[k :: max(50, len(ilsvrc) // 10)][:2]
        ]  # a few ILSVRC classes below it too
    others = [wnid() for _ in range(counts.fall11_other)]
    is_a += [(inner[k % len(inner)], w) for k, w in enumerate(others)]
    extra += others
    all_wnids = [ENTITY, *inner, *ilsvrc, *extra]
    words = {
        w: SET_1512_ROOTS.get(w, f"{M.SOURCE_TYPES[k % len(M.SOURCE_TYPES)].name} {k}")
        for k, w in enumerate(all_wnids)
    }
    words[ENTITY] = "entity"
    return SyntheticWordNet(ilsvrc, sorted(extra), sorted(set(is_a)), words)


def _class_images(
    wnid: str, otype: M.ObjectType, n: int, seed: list[int], digits: M.Digits, quirks: int
) -> list[bytes]:
    """``n`` JPEGs of one class; ``quirks`` 1/2/3 makes the first a CMYK / greyscale
    / PNG file (as in ILSVRC)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        canvas = _object_image(
            rng, digits, otype, IMAGENET_SHAPES[int(rng.integers(len(IMAGENET_SHAPES)))]
        )
        if k == 0 and quirks == 3:
            buf = io.BytesIO()
            Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buf, format="PNG")
            out.append(buf.getvalue())
        else:
            mode = {1: "CMYK", 2: "L"}.get(quirks, "RGB") if k == 0 else "RGB"
            out.append(jpeg(canvas, quality=int(rng.integers(70, 95)), mode=mode))
    return out


def _meta_mat(wordnet: SyntheticWordNet, ids: dict[str, int]) -> bytes:
    """The devkit's ``meta.mat``: 1000 leaves (num_children 0) then a few inner
    synsets, as the official one."""
    import scipy.io

    fields = (
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    )
    leaves = sorted(wordnet.ilsvrc, key=ids.__getitem__)
    inner = sorted({p for p, c in wordnet.is_a if c in set(wordnet.ilsvrc)})
    records = [
        (
            ids[w],
            w,
            wordnet.words[w],
            f"gloss of {wordnet.words[w]}",
            0,
            np.zeros((0,), dtype=np.int16),
            0,
            1300,
        )
        for w in leaves
    ]
    for k, node in enumerate(inner, start=len(leaves) + 1):
        kids = np.array([ids[c] for p, c in wordnet.is_a if p == node and c in ids], dtype=np.int16)
        records.append(
            (k, node, wordnet.words[node], f"gloss of {wordnet.words[node]}", len(kids), kids, 1, 0)
        )
    synsets = np.empty((len(records),), dtype=[(f, object) for f in fields])
    for i, record in enumerate(records):
        synsets[i] = record
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets.reshape(-1, 1)})
    header = (
        b"MATLAB 5.0 MAT-file, Platform: posix, Created by: oquab-repro rehearsal mirror".ljust(116)
    )
    return (
        header + buf.getvalue()[116:]
    )  # scipy stamps the creation time there; fixed, the bytes are reproducible


ILSVRC_DATE, FALL11_DATE = "2012-06-05", "2011-11-01"  # member dates of the official tars
DEVKIT = "ILSVRC2012_devkit_t12"


def build_imagenet(out: Path, counts: MirrorCounts, digits: M.Digits) -> list[Path]:
    """ILSVRC2012/{train tar of per-wnid tars, flat val tar, devkit},
    fall11/fall11_whole.tar, wordnet/*."""
    wordnet = synthetic_wordnet(counts)
    rng = np.random.default_rng([counts.seed, 10])
    ids = {
        w: int(i) + 1
        for w, i in zip(wordnet.ilsvrc, rng.permutation(len(wordnet.ilsvrc)), strict=True)
    }  # ILSVRC2012_ID
    per_class = counts.imagenet_train + counts.imagenet_val
    jobs = (
        delayed(_class_images)(
            w,
            M.SOURCE_TYPES[k % len(M.SOURCE_TYPES)],
            per_class,
            [counts.seed, 11, k],
            digits,
            k if k < 4 else 0,
        )
        for k, w in enumerate(wordnet.ilsvrc)
    )
    drawn = dict(zip(wordnet.ilsvrc, _parallel(jobs, counts.workers), strict=True))
    base = out / ILSVRC_DIR
    _write_ilsvrc_train(base, drawn, counts.imagenet_train, rng)
    val, order = _write_ilsvrc_val(base, drawn, counts.imagenet_train, rng)
    truth = "".join(f"{ids[val[i][0]]}\n" for i in order)
    _write_devkit(base, _meta_mat(wordnet, ids), truth, len(val), rng)
    _write_fall11(out, wordnet, counts, digits)
    folder = _write_wordnet(out, wordnet)
    return (
        [base / n for n, _ in ILSVRC_ARCHIVES.values()]
        + [out / FALL11_DIR / FALL11_WHOLE]
        + [folder / f for f in ("fall11_wnids.txt", "wordnet.is_a.txt", "words.txt")]
    )


def _write_ilsvrc_train(
    base: Path, drawn: dict[str, list[bytes]], n_train: int, rng: np.random.Generator
) -> None:
    """The train archive: one inner tar per wnid of ``<wnid>_<n>.JPEG`` (numbers drawn as ids)."""
    inner_tars = []
    for wnid, images in drawn.items():
        numbers = sorted(rng.choice(np.arange(1, 20_000), n_train, replace=False).tolist())
        members = [(f"{wnid}_{n}.JPEG", images[i]) for i, n in enumerate(numbers)]
        inner_tars.append((f"{wnid}.tar", tar_bytes(members, ILSVRC_DATE)))
    write_tar(base / ILSVRC_ARCHIVES["train"][0], inner_tars, ILSVRC_DATE)


def _write_ilsvrc_val(
    base: Path, drawn: dict[str, list[bytes]], n_train: int, rng: np.random.Generator
) -> tuple[list[tuple[str, bytes]], np.ndarray]:
    """The flat val archive in a shuffled order; returns the (wnid, image) list and that order."""
    val = [(wnid, image) for wnid, images in drawn.items() for image in images[n_train:]]
    order = rng.permutation(len(val))
    entries = [(f"ILSVRC2012_val_{rank + 1:08d}.JPEG", val[i][1]) for rank, i in enumerate(order)]
    write_tar(base / ILSVRC_ARCHIVES["val"][0], entries, ILSVRC_DATE)
    return val, order


def _write_devkit(
    base: Path, meta_mat: bytes, truth: str, n_val: int, rng: np.random.Generator
) -> None:
    """The devkit tgz: meta.mat, the validation ground truth and blacklist, as the official one."""
    blacklist = sorted(rng.choice(np.arange(1, n_val + 1), min(3, n_val), replace=False))
    members = [
        (
            f"{DEVKIT}/COPYING",
            b"Rehearsal mirror of the ILSVRC 2012 development kit (same layout; synthetic"
            b" content).\n",
        ),
        (
            f"{DEVKIT}/readme.txt",
            b"ILSVRC 2012 development kit layout: data/meta.mat,"
            b" data/ILSVRC2012_validation_ground_truth.txt.\n",
        ),
        (f"{DEVKIT}/data/meta.mat", meta_mat),
        (f"{DEVKIT}/data/ILSVRC2012_validation_ground_truth.txt", truth.encode()),
        (
            f"{DEVKIT}/data/ILSVRC2012_validation_blacklist.txt",
            b"".join(f"{k}\n".encode() for k in blacklist),
        ),
        (f"{DEVKIT}/evaluation/demo.val.pred.txt", b""),
    ]
    write_tar(base / ILSVRC_ARCHIVES["devkit"][0], members, ILSVRC_DATE, gz=True)


def _write_fall11(
    out: Path, wordnet: SyntheticWordNet, counts: MirrorCounts, digits: M.Digits
) -> None:
    """fall11_whole.tar: one inner tar per extra (non-ILSVRC) wnid of the 1512-class source set."""
    jobs = (
        delayed(_class_images)(
            w,
            M.SOURCE_TYPES[(k * 7) % len(M.SOURCE_TYPES)],
            counts.fall11_images,
            [counts.seed, 12, k],
            digits,
            0,
        )
        for k, w in enumerate(wordnet.fall11_extra)
    )
    fall11 = _parallel(jobs, counts.workers)
    whole = [
        (
            f"{w}.tar",
            tar_bytes([(f"{w}_{n + 1}.JPEG", im) for n, im in enumerate(images)], FALL11_DATE),
        )
        for w, images in zip(wordnet.fall11_extra, fall11, strict=True)
    ]
    write_tar(out / FALL11_DIR / FALL11_WHOLE, whole, FALL11_DATE)


def _write_wordnet(out: Path, wordnet: SyntheticWordNet) -> Path:
    """The WordNet files the 1512-class set is derived from (ids, is-a pairs, words)."""
    folder = out / WORDNET_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fall11_wnids.txt").write_text("".join(f"{w}\n" for w in wordnet.fall11))
    (folder / "wordnet.is_a.txt").write_text("".join(f"{p} {c}\n" for p, c in wordnet.is_a))
    (folder / "words.txt").write_text(
        "".join(f"{w}\t{wordnet.words[w]}\n" for w in sorted(wordnet.words))
    )
    return folder


# ---------------------------------------------------------------------------------------------
# The whole mirror
# ---------------------------------------------------------------------------------------------


def write_manifest(root: Path, files: Iterable[Path]) -> Path:
    """``SHA256SUMS`` of ``files`` (paths relative to ``root``), sorted:
    ``sha256sum -c`` checks it."""
    lines = []
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    manifest = root / MANIFEST
    manifest.write_text("".join(lines))
    return manifest


def build_mirror(root: Path, counts: MirrorCounts | None = None) -> dict[str, Any]:
    """Write the whole rehearsal mirror under ``root`` (which must be empty or
    absent); return a summary."""
    root, counts = Path(root), counts or MirrorCounts()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root}: not empty; the mirror is written into an empty or new folder."
        )
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / ".scratch"
    digits = M.Digits.load()
    files: list[Path] = []
    try:
        steps: list[tuple[str, Callable[[], list[Path]]]] = [
            ("VOC 2007", lambda: build_voc2007(root, counts, digits)),
            ("VOC 2012", lambda: build_voc2012(root, counts, digits)),
            ("COCO 2014", lambda: build_coco(root, counts, digits)),
            ("LFW", lambda: build_lfw(root, counts, digits)),
            ("LSUN bedroom", lambda: build_lsun(root, counts, digits, scratch)),
            ("ResNet-34", lambda: build_resnet34(root, counts)),
            ("Tübingen", lambda: build_tuebingen(root, counts)),
            ("ImageNet", lambda: build_imagenet(root, counts, digits)),
        ]
        for name, step in steps:
            tic = time.perf_counter()
            files += step()
            log.info("mirror: %s written in %.1f s", name, time.perf_counter() - tic)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = write_manifest(root, files)
    return {
        "root": str(root),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.perf_counter() - start, 1),
        "manifest": str(manifest),
    }


def params_for(root: Path, url: str) -> dict[str, Any]:
    """The ``data.full`` keys that point the full profile at a mirror built in
    ``root`` and served at ``url``."""
    root = Path(root).resolve()
    return {
        "mirror": url,
        "mirror_manifest": str(root / MANIFEST),
        "imagenet_path": str(root / ILSVRC_DIR),
        "imagenet_fall11_path": str(root / FALL11_DIR),
        "wordnet_fall11_path": str(root / WORDNET_DIR / "fall11_wnids.txt"),
        "wordnet_is_a_path": str(root / WORDNET_DIR / "wordnet.is_a.txt"),
    }


# ---------------------------------------------------------------------------------------------
# Serving it: HTTP with Range on 127.0.0.1
# ---------------------------------------------------------------------------------------------


class MirrorHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under the server's ``root`` with single-range ``Range`` requests."""

    root: Path
    server_version = "oquab-repro-mirror"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.root / rel).resolve()
        return path if path.is_file() and self.root.resolve() in path.parents else None

    def _headers(self) -> tuple[Path, int, int] | None:
        path = self._file()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        size = path.stat().st_size
        start, end = 0, size - 1
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
            if start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        return path, start, end

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        found = self._headers()
        if found is None:
            return
        path, start, end = found
        with open(path, "rb") as handle:
            handle.seek(start)
            left = end - start + 1
            while left > 0 and (block := handle.read(min(1 << 20, left))):
                self.wfile.write(block)
                left -= len(block)


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading HTTP server for the mirror at ``root`` (port 0: any free port)."""
    handler = type("BoundMirrorHandler", (MirrorHandler,), {"root": Path(root)})
    return ThreadingHTTPServer((host, port), handler)


def iter_files(root: Path) -> Iterator[Path]:
    """Every file of a built mirror, as listed in its manifest."""
    for line in (Path(root) / MANIFEST).read_text().splitlines():
        yield Path(root) / line.split("  ", 1)[1]


def check_manifest(root: Path) -> list[str]:
    """Files whose bytes no longer match the manifest (an empty list: the mirror is intact)."""
    bad = []
    for line in (Path(root) / MANIFEST).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = Path(root) / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(rel)
    return bad


def sizes(root: Path) -> dict[str, int]:
    """Bytes per top-level folder of the mirror (for the build summary)."""
    out: dict[str, int] = {}
    for path in iter_files(root):
        top = path.relative_to(root).parts[0]
        out[top] = out.get(top, 0) + path.stat().st_size
    return out
