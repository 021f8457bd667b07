"""Full-profile data: official archives with checksums, resumable downloads, atomic extraction.

- :func:`download` fetches a URL to ``<file>.part`` with HTTP ``Range`` requests (a dropped
  connection resumes where it stopped), shows a tqdm bar, checks the published checksum and only
  then renames the file into place: a file without ``.part`` is always complete and verified.
- :func:`extract` unpacks into a fresh temporary folder, checks the archive end to end (a truncated
  tar or a zip member with a bad CRC fails) and moves the content into the destination only when
  everything succeeded. The data stage builds each dataset folder in a staging area and renames it
  into ``data/01_raw`` (:mod:`oquab_repro.lib.rawfolder`), so a half-extracted folder never looks
  finished.
- ImageNet cannot be downloaded without an account: :func:`prepare_imagenet` takes a local folder
  holding either the ILSVRC2012 archives or extracted ``train/`` and ``val/`` folders, validates it
  and says exactly what is missing.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import random
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.imagenet import (
    parse_devkit_archive,
    parse_train_archive,
    parse_val_archive,
)
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download or an archive failed; the message names the file and the fix."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published checksum."""


class TruncatedArchiveError(DownloadError):
    """The archive ends early or has corrupt members."""


@dataclass(frozen=True)
class Archive:
    """An official archive: where it comes from, its published checksum, where its content goes.

    ``checksum`` is ``"md5:<hex>"`` or ``"sha256:<hex>"`` (a prefix of the hex digest is allowed,
    as in torchvision's weight file names); ``None`` when the publisher gives none — then the
    sha256 actually received is logged and reported in the metrics (trust on first use).
    ``dest`` is relative to ``data/01_raw``; ``strip`` is a top-level folder of the archive whose
    content goes directly into ``dest``.
    """

    url: str
    checksum: str | None
    dest: str
    strip: str | None = None
    unpack: bool = True  # False: a single file (weights) copied into ``dest`` as is

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
ARCHIVES: dict[str, Archive] = {
    # Pascal VOC: md5s as published with the devkits (and pinned by torchvision.datasets.VOCDetection).
    "voc2007_trainval": Archive(f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", "md5:c52e279531787c972589f7e41ab4ae64", "voc"),
    "voc2007_test": Archive(f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar", "md5:b6e924de25625d8de591ea690078ad9f", "voc"),
    "voc2012_trainval": Archive(f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar", "md5:6cd6e144f989b92b3379bac3b3de84fd", "voc"),
    # COCO 2014: the COCO site publishes no checksums.
    "coco2014_train": Archive("http://images.cocodataset.org/zips/train2014.zip", None, "coco"),
    "coco2014_val": Archive("http://images.cocodataset.org/zips/val2014.zip", None, "coco"),
    "coco2014_annotations": Archive("http://images.cocodataset.org/annotations/annotations_trainval2014.zip", None, "coco"),
    # LFW (funneled): md5 as pinned by torchvision.datasets.LFWPeople; the site is often down, put the
    # archive in data.full.download_dir by hand and it is verified and used as is.
    "lfw_funneled": Archive("http://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz", "md5:1b42dfed7d15c9b2dd63d5e5840c86ad", "gan/lfw", "lfw_funneled"),
    # LSUN bedroom (LMDB): no published checksum.
    "lsun_bedroom": Archive("http://dl.yf.io/lsun/scenes/bedroom_train_lmdb.zip", None, "gan/lsun_bedroom"),
    # ImageNet ResNet-34 (torchvision) to featurise GAN samples (§5.3.3); the file name carries
    # the first hex digits of its sha256, which torchvision checks the same way.
    "resnet34_imagenet": Archive("https://download.pytorch.org/models/resnet34-b627a593.pth", "sha256:b627a593", "weights", unpack=False),
}

IMAGENET_ARCHIVES = {
    "train": ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
    "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
    "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
}
IMAGENET_COUNTS = {"train": 1_281_167, "val": 50_000}
WNID = re.compile(r"^n\d{8}$")


# ---------------------------------------------------------------------------------------------
# Checksums and downloads
# ---------------------------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str | None) -> str:
    """Check ``path`` against ``"md5:…"``/``"sha256:…"``; return its sha256 (for the metrics)."""
    sha256 = file_digest(path, "sha256")
    if checksum is None:
        log.warning("%s: no published checksum; sha256 received = %s", path, sha256)
        return sha256
    algorithm, _, expected = checksum.partition(":")
    actual = sha256 if algorithm == "sha256" else file_digest(path, algorithm)
    if not actual.startswith(expected.lower()):
        raise ChecksumError(
            f"{path}: {algorithm} is {actual}, the published value is {expected}. The file is corrupt or "
            "not the official archive; it was removed, run the stage again to re-download it."
        )
    return sha256


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "oquab-repro"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _expected_total(response: http.client.HTTPResponse, offset: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise DownloadError(f"{response.url}: server answered an unexpected range; delete the .part file.")
        return None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(url: str, dest: Path, checksum: str | None, *, retries: int = 5, timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, rename it; return its sha256.

    An existing ``dest`` is verified and kept. Connection errors resume from the bytes already on
    disk, up to ``retries`` times. A checksum mismatch removes the bad bytes and raises.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        try:
            return verify_checksum(dest, checksum)
        except ChecksumError:
            dest.unlink()
            raise
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            with _open(url, offset, timeout) as response:
                if offset and response.status == 200:  # server ignores Range: start again
                    offset = 0
                total = _expected_total(response, offset)
                if total is not None and offset == total:
                    break
                with (
                    open(part, "ab" if offset else "wb") as handle,
                    tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar,
                ):
                    while block := response.read(CHUNK):
                        handle.write(block)
                        bar.update(len(block))
            size = part.stat().st_size
            if total is None or size == total:
                break
            log.warning("%s: connection closed at %d of %d bytes; resuming", url, size, total)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # range not satisfiable: the .part is already complete
                break
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL or fetch it by hand into {dest}.") from exc
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            log.warning("%s: %s (attempt %d/%d); resuming", url, exc, attempt + 1, retries + 1)
    else:
        raise DownloadError(
            f"{url}: still incomplete after {retries + 1} attempts ({part} kept; run again to resume)."
        )
    try:
        sha256 = verify_checksum(part, checksum)
    except ChecksumError as exc:
        part.unlink()
        raise ChecksumError(str(exc).replace(str(part), str(dest))) from None
    os.replace(part, dest)
    return sha256


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def _check_and_extract(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as handle:
                bad = handle.testzip()
                if bad is not None:
                    raise TruncatedArchiveError(f"{archive}: member {bad} is corrupt; delete the archive and re-download it.")
                handle.extractall(into)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise TruncatedArchiveError(f"{archive}: corrupt or truncated zip ({exc}); delete it and re-download.") from exc
        return
    try:
        with tarfile.open(archive) as handle:
            handle.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise TruncatedArchiveError(f"{archive}: corrupt or truncated archive ({exc}); delete it and re-download.") from exc


def _merge(src: Path, dst: Path) -> None:
    """Move the tree ``src`` into ``dst``, merging folders (several archives share one root)."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if item.is_dir() and target.is_dir():
            _merge(item, target)
        else:
            os.replace(item, target)


def extract(archive: Path, into: Path, strip: str | None = None) -> None:
    """Unpack ``archive`` (tar, tar.gz, zip) into ``into``; nothing lands there unless all of it does."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=into.parent, prefix=f".{into.name}.extract-"))
    try:
        _check_and_extract(Path(archive), scratch)
        root = scratch / strip if strip else scratch
        if not root.is_dir():
            raise TruncatedArchiveError(f"{archive}: expected a top-level folder '{strip}'; is it the official archive?")
        _merge(root, into)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch_archives(names: Iterable[str], download_dir: Path, staging: Path) -> dict[str, str]:
    """Download, verify and extract the named :data:`ARCHIVES` under ``staging/<dest>``; return sha256s."""
    unknown = sorted(set(names) - set(ARCHIVES))
    if unknown:
        raise DownloadError(f"params.yaml data.full.archives: unknown {unknown}; choose from {sorted(ARCHIVES)}.")
    digests = {}
    for name in names:
        spec = ARCHIVES[name]
        path = Path(download_dir) / spec.filename
        digests[name] = download(spec.url, path, spec.checksum)
        if spec.unpack:
            log.info("Extracting %s into %s", path, spec.dest)
            extract(path, staging / spec.dest, spec.strip)
        else:
            (staging / spec.dest).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / spec.dest / spec.filename)
    return digests


# ---------------------------------------------------------------------------------------------
# ImageNet (local archives or folders)
# ---------------------------------------------------------------------------------------------


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and WNID.match(p.name)) if folder.is_dir() else []


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link a folder tree (copy when links are impossible), so no 150 GB copy is needed."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)


def prepare_imagenet(source: Path, staging: Path, verify_md5: bool, expected_classes: int = 1000) -> dict[str, int]:
    """Put ILSVRC-2012 in folder layout under ``staging`` from extracted folders or the archives."""
    source = Path(source)
    if not source.is_dir():
        raise DownloadError(
            f"data.full.imagenet_path = {source}: folder not found. ImageNet needs an account at image-net.org; "
            f"download {', '.join(n for n, _ in IMAGENET_ARCHIVES.values())} there and set the path to their folder."
        )
    folders = {split: _class_folders(source / split) for split in ("train", "val")}
    if all(len(v) == expected_classes for v in folders.values()):
        for split in folders:
            _link_tree(source / split, staging / split)
    elif any(folders.values()):
        missing = {s: expected_classes - len(v) for s, v in folders.items() if len(v) != expected_classes}
        raise DownloadError(
            f"{source}: extracted ImageNet is incomplete: "
            + ", ".join(f"{s}/ has {len(folders[s])} of {expected_classes} class folders (n########)" for s in missing)
            + "; re-extract it, or point data.full.imagenet_path at the folder holding the ILSVRC2012 archives."
        )
    else:
        absent = [n for n, _ in IMAGENET_ARCHIVES.values() if not (source / n).is_file()]
        if absent:
            raise DownloadError(
                f"{source}: neither train/ and val/ class folders nor the archives; missing: {', '.join(absent)}. "
                "Download them from image-net.org (account needed) into this folder."
            )
        if verify_md5:
            for name, md5 in IMAGENET_ARCHIVES.values():
                verify_checksum(source / name, f"md5:{md5}")
        staging.mkdir(parents=True, exist_ok=True)
        parse_devkit_archive(str(staging), str(source / IMAGENET_ARCHIVES["devkit"][0]))
        parse_train_archive(str(staging), str(source / IMAGENET_ARCHIVES["train"][0]))
        parse_val_archive(str(staging), str(source / IMAGENET_ARCHIVES["val"][0]))
    counts = {f"imagenet_{s}_images": sum(1 for _ in (staging / s).rglob("*.JPEG")) for s in ("train", "val")}
    for split, expected in IMAGENET_COUNTS.items():
        if expected_classes == 1000 and counts[f"imagenet_{split}_images"] != expected:
            log.warning("ImageNet %s: %d images, ILSVRC-2012 has %d", split, counts[f"imagenet_{split}_images"], expected)
    return counts


# ---------------------------------------------------------------------------------------------
# Source class sets of Chapter 3 (§3.3): 1000C, 1000R, 1512
# ---------------------------------------------------------------------------------------------

# WordNet roots whose descendants are added to ILSVRC-2012 for the 1512-class set.
SET_1512_ROOTS = {
    "n02370806": "hoofed mammal",
    "n03405725": "furniture",
    "n03791235": "motor vehicle",
    "n04019101": "public transport",
    "n02834778": "bicycle",
}


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
    pairs = [tuple(line.split()[:2]) for line in Path(path).read_text().splitlines() if line.strip()]
    return [p for p in pairs if len(p) == 2]  # type: ignore[misc]


def class_sets(ilsvrc: list[str], fall11: list[str] | None, is_a: list[tuple[str, str]] | None, seed: int) -> dict[str, list[str]]:
    """The source sets by source network name: ``in1000c`` (1000C) = ILSVRC-2012; ``in1000r``
    (1000R) = 1000 seeded random fall-2011 synsets; ``in1512`` (1512) = ILSVRC + the roots'
    subtrees.

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
