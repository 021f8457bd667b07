"""ImageNet for Chapter 3's source sets (§3.3): ILSVRC-2012 plus the fall 2011
synsets 1000R / 1512 add.

ImageNet cannot be downloaded without an account, so both parts come from local paths:

- ILSVRC-2012 (``data.full.imagenet_path``): either the official archives
  (``ILSVRC2012_img_train.tar`` of per-wnid tars, the flat ``ILSVRC2012_img_val.tar`` and
  ``ILSVRC2012_devkit_t12.tar.gz`` whose ``meta.mat`` and validation ground truth sort the val
  images into classes) or extracted ``train/<wnid>/`` and ``val/<wnid>/`` folders. The archives
  are streamed member by member (the 138 GB train tar is never unpacked twice) into
  ``data/01_raw/imagenet/{train,val}/<wnid>/``; folders are hard-linked.
- The fall 2011 release (``data.full.imagenet_fall11_path``) for the synsets of 1000R (1000 random
  fall-2011 synsets) and 1512 (ILSVRC + the WordNet subtrees of :data:`SET_1512_ROOTS`) that
  ILSVRC-2012 lacks: ``fall11_whole.tar`` (per-synset tars, as image-net.org distributed it),
  ``<wnid>.tar`` files or ``<wnid>/`` folders. Those synsets have no val split, so a seeded
  ``fall11_val_per_class`` of each (at most half) is held out, like ILSVRC's 50 per class.

Each ``find_*`` function inspects its input without writing and returns the problems it found, so
the data stage can name everything that is missing in one message before it writes anything.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import re
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from oquab_repro.lib.download import (
    ChecksumError,
    TruncatedArchiveError,
    disk_full,
    manifest_checksum,
    verify_checksum,
)

log = logging.getLogger(__name__)

ILSVRC_ARCHIVES = {
    "train": ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
    "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
    "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
}
ILSVRC_CLASSES = 1000
IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}
FALL11_WHOLE = "fall11_whole.tar"
WNID = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
MISSING_FALL11_LIST = "missing_fall11_wnids.txt"

# WordNet roots whose descendants are added to ILSVRC-2012 for the 1512-class set (§3.3).
SET_1512_ROOTS = {
    "n02370806": "hoofed mammal",
    "n03405725": "furniture",
    "n03791235": "motor vehicle",
    "n04019101": "public transport",
    "n02834778": "bicycle",
}


def _shown(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------
# ILSVRC-2012: find (no writes), verify, install
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ilsvrc:
    """ILSVRC-2012 as found under ``data.full.imagenet_path``."""

    root: Path
    layout: Literal["folders", "archives"]
    classes: tuple[str, ...]
    words: dict[str, str] = field(default_factory=dict)
    val_wnids: tuple[str, ...] = ()  # archives: the class of each val image, in file-name order

    def archive(self, part: str) -> Path:
        return self.root / ILSVRC_ARCHIVES[part][0]


def read_devkit(path: Path) -> tuple[dict[str, str], list[str]]:
    """``meta.mat`` leaves (wnid → words, in ILSVRC2012_ID order) and the val ground truth as wnids.

    The same fields torchvision's ``parse_devkit_archive`` reads, without its md5 check of the
    official file (which a mirror's devkit cannot pass) and without unpacking to disk.
    """
    import scipy.io

    with tarfile.open(path) as tar:
        meta = scipy.io.loadmat(
            io.BytesIO(tar.extractfile("ILSVRC2012_devkit_t12/data/meta.mat").read()),
            squeeze_me=True,
        )
        truth = (
            tar.extractfile("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
            .read()
            .decode()
        )
    synsets = meta["synsets"]
    leaves = sorted(
        (int(s["ILSVRC2012_ID"]), str(s["WNID"]), str(s["words"]))
        for s in synsets
        if int(s["num_children"]) == 0
    )
    by_id = {i: w for i, w, _ in leaves}
    return {w: words for _, w, words in leaves}, [by_id[int(line)] for line in truth.split()]


def _class_folders(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and WNID.match(p.name))
        if folder.is_dir()
        else []
    )


def _find_folders(source: Path, expected: int) -> tuple[Ilsvrc | None, list[str]]:
    train, val = (_class_folders(source / s) for s in ("train", "val"))
    devkit = source / ILSVRC_ARCHIVES["devkit"][0]
    words = read_devkit(devkit)[0] if devkit.is_file() else {}
    reference = sorted(words) or sorted(set(train) | set(val))
    problems = [
        f"{source / split}/: class folder(s) {_shown(sorted(set(reference) - set(found)))} missing;"
        " re-extract ILSVRC-2012 (or restore them), or point data.full.imagenet_path at the folder"
        " of the archives"
        for split, found in (("train", train), ("val", val))
        if set(reference) - set(found)
    ]
    if not words and len(reference) != expected:
        problems.append(
            f"{source}: {len(reference)} class folders, ILSVRC-2012 has {expected}; re-extract it,"
            f" or add {ILSVRC_ARCHIVES['devkit'][0]} there so the missing classes can be named"
        )
    return (None if problems else Ilsvrc(source, "folders", tuple(reference), words)), problems


def _find_archives(source: Path) -> tuple[Ilsvrc | None, list[str]]:
    words, val_wnids = read_devkit(source / ILSVRC_ARCHIVES["devkit"][0])
    problems = []
    with tarfile.open(source / ILSVRC_ARCHIVES["train"][0]) as tar:
        inner = {Path(n).stem for n in tar.getnames() if n.endswith(".tar")}
    if missing := sorted(set(words) - inner):
        problems.append(
            f"{source / ILSVRC_ARCHIVES['train'][0]}: no per-class tar for {_shown(missing)}; "
            "the archive is incomplete: download it again from image-net.org"
        )
    with tarfile.open(source / ILSVRC_ARCHIVES["val"][0]) as tar:
        n_val = sum(1 for m in tar if m.isfile())
    if n_val != len(val_wnids):
        problems.append(
            f"{source / ILSVRC_ARCHIVES['val'][0]}: {n_val} images but the devkit's ground truth"
            f" lists {len(val_wnids)}; download the val archive and the devkit again from"
            " image-net.org"
        )
    return (
        None
        if problems
        else Ilsvrc(source, "archives", tuple(sorted(words)), words, tuple(val_wnids))
    ), problems


def find_ilsvrc(
    source: Path, expected_classes: int = ILSVRC_CLASSES
) -> tuple[Ilsvrc | None, list[str]]:
    """Inspect ``data.full.imagenet_path`` (folders or archives) without
    writing; name what is missing."""
    source = Path(source)
    names = ", ".join(n for n, _ in ILSVRC_ARCHIVES.values())
    if not source.is_dir():
        return None, [
            f"data.full.imagenet_path = {source}: folder not found. ImageNet needs an account at"
            f" image-net.org; download {names} there and set the path to their folder"
        ]
    if _class_folders(source / "train") or _class_folders(source / "val"):
        return _find_folders(source, expected_classes)
    absent = [n for n, _ in ILSVRC_ARCHIVES.values() if not (source / n).is_file()]
    if absent:
        return None, [
            f"{source}: neither train/ and val/ class folders nor the archives; missing:"
            f" {', '.join(absent)}. Download them from image-net.org (account needed) into this"
            " folder"
        ]
    try:
        return _find_archives(source)
    except (tarfile.TarError, EOFError, OSError, KeyError, ValueError) as exc:
        return None, [
            f"{source}: cannot read the ILSVRC2012 archives ({exc}); download them again from"
            " image-net.org"
        ]


def verify_ilsvrc(ilsvrc: Ilsvrc, manifest: dict[str, str] | None) -> list[str]:
    """Check the archives against the mirror manifest's sha256, or else the published md5."""
    if ilsvrc.layout != "archives":
        return []
    problems = []
    for name, md5 in ILSVRC_ARCHIVES.values():
        checksum = manifest_checksum(manifest, name)
        authority = "mirror manifest" if checksum else "published"
        try:
            verify_checksum(ilsvrc.root / name, checksum or f"md5:{md5}", authority)
        except ChecksumError as exc:
            problems.append(
                f"{exc} The archive is corrupt or not the one expected: download it again from"
                " image-net.org (or set data.full.imagenet_verify_md5: false to skip the check)"
            )
    return problems


def _stream_tar(archive: Path, into: Path, what: str) -> None:
    """Unpack the tar ``archive`` into ``into``; a full disk or a broken archive names the file."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _blame(exc, archive, into, what) from exc


def _blame(exc: BaseException, archive: Path, into: Path, what: str) -> Exception:
    if (full := disk_full(exc, archive, into)) is not None:
        return full
    return TruncatedArchiveError(
        f"{archive}: corrupt or truncated {what} ({exc}); download it again."
    )


def _install_train_archive(archive: Path, train: Path) -> None:
    """Each per-class tar of the train archive straight from the outer one into
    ``train/<wnid>/``."""
    try:
        with tarfile.open(archive) as outer:
            for member in tqdm(outer, desc="ILSVRC train classes", unit="class", leave=False):
                if not member.isfile() or not member.name.endswith(".tar"):
                    continue
                with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                    inner.extractall(train / Path(member.name).stem, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _blame(exc, archive, train, "ILSVRC train archive") from exc


def _install_val_archive(archive: Path, val: Path, wnids: tuple[str, ...]) -> None:
    """Val images into ``val/<wnid>/`` by the devkit's ground truth (images in file-name order)."""
    try:
        with tarfile.open(archive) as tar:
            members = sorted((m for m in tar if m.isfile()), key=lambda m: m.name)
            for member, wnid in tqdm(
                zip(members, wnids, strict=True), total=len(members), desc="ILSVRC val", leave=False
            ):
                tar.extract(
                    member.replace(name=f"{wnid}/{Path(member.name).name}"), val, filter="data"
                )
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _blame(exc, archive, val, "ILSVRC val archive") from exc


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a folder tree (copy when links are impossible), so no 150 GB copy is needed."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    try:
        shutil.copytree(src, dst, copy_function=link)
    except (OSError, shutil.Error) as exc:
        if (full := disk_full(exc, src, dst.parent)) is not None:
            raise full from exc
        raise


def install_ilsvrc(ilsvrc: Ilsvrc, out: Path) -> dict[str, int]:
    """ILSVRC-2012 into ``out/{train,val}/<wnid>/`` (+ ``synsets.txt``); return image counts."""
    out.mkdir(parents=True, exist_ok=True)
    if ilsvrc.layout == "folders":
        for split in ("train", "val"):
            _link_tree(ilsvrc.root / split, out / split)
    else:
        _install_train_archive(ilsvrc.archive("train"), out / "train")
        _install_val_archive(ilsvrc.archive("val"), out / "val", ilsvrc.val_wnids)
    if ilsvrc.words:
        (out / "synsets.txt").write_text(
            "".join(f"{w} {ilsvrc.words[w]}\n" for w in ilsvrc.classes)
        )
    counts = {f"imagenet_{s}_images": _count_images(out / s) for s in ("train", "val")}
    for split, expected in IMAGENET_COUNTS.items():
        if len(ilsvrc.classes) == ILSVRC_CLASSES and counts[f"imagenet_{split}_images"] != expected:
            log.warning(
                "ImageNet %s: %d images, ILSVRC-2012 has %d",
                split,
                counts[f"imagenet_{split}_images"],
                expected,
            )
    return counts


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Fall 2011 synsets (1000R, 1512 beyond ILSVRC)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fall11:
    """Where each needed synset's images are: a member of
    ``fall11_whole.tar``, a tar, or a folder."""

    root: Path
    members: dict[
        str, tuple[str, str]
    ]  # wnid → ("whole", member of fall11_whole.tar) | ("file", <wnid>.tar or <wnid>/)
    sizes: dict[str, int]  # bytes per synset (for the free-space check)

    @property
    def whole(self) -> bool:
        return any(kind == "whole" for kind, _ in self.members.values())


def find_fall11(
    source: Path, wanted: Iterable[str], report_dir: Path
) -> tuple[Fall11 | None, list[str]]:
    """Index the fall 2011 synsets at ``source`` and name the ``wanted`` ones that are absent.

    The full list of missing wnids is written to ``report_dir/missing_fall11_wnids.txt`` so the
    user can fetch exactly those from image-net.org.
    """
    wanted = sorted(wanted)
    if not wanted:
        return Fall11(Path(source), {}, {}), []
    source = Path(source)
    if not source.is_dir():
        return None, [
            f"data.full.imagenet_fall11_path = {source}: folder not found. Source sets 1000R / 1512"
            f" need {len(wanted)} ImageNet fall 2011 synsets outside ILSVRC-2012"
            f" ({_shown(wanted, 5)}); put {FALL11_WHOLE} or their <wnid>.tar files there"
            " (image-net.org, account needed)"
        ]
    whole = source / FALL11_WHOLE
    members, sizes = {}, {}
    if whole.is_file():
        try:
            with tarfile.open(whole) as tar:
                for m in tar:
                    if m.isfile() and WNID.match(Path(m.name).stem):
                        members[Path(m.name).stem], sizes[Path(m.name).stem] = (
                            ("whole", m.name),
                            m.size,
                        )
        except (tarfile.TarError, EOFError, OSError) as exc:
            return None, [f"{whole}: cannot read it ({exc}); download it again from image-net.org"]
    for entry in source.iterdir():
        wnid = entry.name.removesuffix(".tar")
        if WNID.match(wnid) and wnid not in members and (entry.is_dir() or entry.suffix == ".tar"):
            members[wnid] = ("file", entry.name)
            sizes[wnid] = (
                entry.stat().st_size
                if entry.is_file()
                else sum(f.stat().st_size for f in entry.iterdir())
            )
    missing = [w for w in wanted if w not in members]
    if missing:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / MISSING_FALL11_LIST).write_text("".join(f"{w}\n" for w in missing))
        return None, [
            f"{source}: {len(missing)} of the {len(wanted)} fall 2011 synsets that 1000R / 1512"
            f" need are missing ({_shown(missing, 5)}; all listed in"
            f" {report_dir / MISSING_FALL11_LIST}); add their <wnid>.tar files or {FALL11_WHOLE}"
            " from image-net.org"
        ]
    return Fall11(source, {w: members[w] for w in wanted}, {w: sizes[w] for w in wanted}), []


def _synset_files(
    fall11: Fall11, wnid: str, outer: tarfile.TarFile | None
) -> list[tuple[str, bytes]]:
    """(file name, bytes) of one synset's images, sorted by name."""
    kind, name = fall11.members[wnid]
    if kind == "whole":
        assert outer is not None
        with tarfile.open(fileobj=outer.extractfile(name)) as inner:
            return sorted(
                (Path(m.name).name, inner.extractfile(m).read()) for m in inner if m.isfile()
            )
    path = fall11.root / name
    if path.is_dir():
        return sorted(
            (f.name, f.read_bytes()) for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
        )
    with tarfile.open(path) as inner:
        return sorted((Path(m.name).name, inner.extractfile(m).read()) for m in inner if m.isfile())


def held_out(n: int, val_per_class: int) -> int:
    """Images of an n-image synset held out for val: ``val_per_class``, at most half of them."""
    return min(val_per_class, n // 2)


def install_fall11(fall11: Fall11, out: Path, val_per_class: int, seed: int) -> dict[str, int]:
    """Each needed synset split (seeded, per synset) into ``out/val/<wnid>`` and
    ``out/train/<wnid>``."""
    counts = {
        "fall11_synsets": len(fall11.members),
        "fall11_train_images": 0,
        "fall11_val_images": 0,
    }
    try:
        with (
            tarfile.open(fall11.root / FALL11_WHOLE)
            if fall11.whole
            else contextlib.nullcontext() as outer
        ):
            for wnid in tqdm(sorted(fall11.members), desc="fall 2011 synsets", leave=False):
                _install_synset(fall11, wnid, outer, out, val_per_class, seed, counts)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _blame(exc, fall11.root, out, "fall 2011 synset archive") from exc
    return counts


def _install_synset(
    fall11: Fall11,
    wnid: str,
    outer: tarfile.TarFile | None,
    out: Path,
    val_per_class: int,
    seed: int,
    counts: dict[str, int],
) -> None:
    files = _synset_files(fall11, wnid, outer)
    if len(files) < 2:
        raise TruncatedArchiveError(
            f"{fall11.root / fall11.members[wnid][1]}: synset {wnid} has {len(files)} image(s); a"
            " train and a val image are needed at least: fetch it again from image-net.org"
        )
    order = np.random.default_rng([seed, int(wnid[1:])]).permutation(len(files))
    k = held_out(len(files), val_per_class)
    for rank, index in enumerate(order):
        split = "val" if rank < k else "train"
        folder = out / split / wnid
        folder.mkdir(parents=True, exist_ok=True)
        name, data = files[index]
        (folder / name).write_bytes(data)
        counts[f"fall11_{split}_images"] += 1


# ---------------------------------------------------------------------------------------------
# WordNet and the source class sets of Chapter 3 (§3.3): 1000C, 1000R, 1512
# ---------------------------------------------------------------------------------------------


def descendants(roots: Iterable[str], is_a: Iterable[tuple[str, str]]) -> set[str]:
    """All synsets below ``roots`` in the (parent, child) relation, roots included."""
    children: dict[str, list[str]] = {}
    for parent, child in is_a:
        children.setdefault(parent, []).append(child)
    seen, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(children.get(node, []))
    return seen


def read_is_a(path: Path) -> list[tuple[str, str]]:
    """ImageNet's ``wordnet.is_a.txt``: one ``parent child`` wnid pair per line."""
    pairs = [
        tuple(line.split()[:2]) for line in Path(path).read_text().splitlines() if line.strip()
    ]
    return [p for p in pairs if len(p) == 2]  # type: ignore[misc]


def read_wordnet(
    fall11_path: Path, is_a_path: Path
) -> tuple[tuple[list[str], list[tuple[str, str]]] | None, list[str]]:
    """The fall-2011 synset list and WordNet's is-a pairs, or the problems
    that prevent reading them."""
    problems = []
    for path, key, use in (
        (
            fall11_path,
            "wordnet_fall11_path",
            "the fall 2011 synset list (21,841 wnids) that 1000R draws from",
        ),
        (
            is_a_path,
            "wordnet_is_a_path",
            "WordNet's is-a pairs (wordnet.is_a.txt) that 1512 is built from",
        ),
    ):
        if not Path(path).is_file():
            problems.append(
                f"data.full.{key} = {path}: file not found; it is {use} (image-net.org)"
            )
    if problems:
        return None, problems
    fall11 = Path(fall11_path).read_text().split()
    bad = [w for w in fall11 if not WNID.match(w)]
    if bad:
        return None, [
            f"{fall11_path}: {len(bad)} lines are not wnids (n########), e.g. {bad[0]!r}; it must"
            " list one wnid per line"
        ]
    return (fall11, read_is_a(Path(is_a_path))), []


def class_sets(
    ilsvrc: list[str], fall11: list[str] | None, is_a: list[tuple[str, str]] | None, seed: int
) -> dict[str, list[str]]:
    """The source sets by source network name (params.PRETRAIN_SOURCES): ``in1000c`` (1000C) =
    ILSVRC-2012; ``in1000r`` (1000R) = as many seeded random fall-2011 synsets; ``in1512`` (1512) =
    ILSVRC + the roots' subtrees.

    1000R and 1512 need the fall-2011 synset list and WordNet's is-a pairs (not shipped with
    ILSVRC-2012); without them only ``in1000c`` is returned.
    """
    sets = {"in1000c": sorted(ilsvrc)}
    if fall11 is not None:
        sets["in1000r"] = sorted(random.Random(seed).sample(sorted(fall11), len(ilsvrc)))
        if is_a is not None:
            below = descendants(SET_1512_ROOTS, is_a) & set(fall11)
            sets["in1512"] = sorted(set(ilsvrc) | below)
    return sets


def needed_bytes(ilsvrc: Ilsvrc | None, fall11: Fall11 | None, staging: Path) -> int:
    """Bytes installing ImageNet into ``staging`` writes (hard links on
    the same disk write none)."""
    total = 0
    if ilsvrc is not None:
        if ilsvrc.layout == "archives":
            total += sum(ilsvrc.archive(p).stat().st_size for p in ("train", "val"))
        elif os.stat(ilsvrc.root).st_dev != os.stat(staging).st_dev:
            total += sum(
                f.stat().st_size
                for s in ("train", "val")
                for f in (ilsvrc.root / s).rglob("*")
                if f.is_file()
            )
    if fall11 is not None:
        total += sum(fall11.sizes.values())
    return total
