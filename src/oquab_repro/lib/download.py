"""Full-profile data: official archives with checksums, resumable downloads, atomic extraction.

- :class:`Archive` declares where an archive comes from, its published checksum and where its
  content goes; :func:`source_of` resolves it against an optional mirror (``data.full.mirror``:
  the archive sits at ``<mirror>/<host>/<path>`` of its official URL) whose ``SHA256SUMS``
  manifest then replaces the published checksum.
- :func:`download` fetches a URL to ``<file>.part`` with HTTP ``Range`` requests (a dropped
  connection resumes where it stopped; retries back off exponentially, an unreachable host is
  given up after a few tries), shows a tqdm bar, checks the checksum and only then renames the
  file into place: a file without ``.part`` is always complete and verified.
- :func:`download_all` tries every archive and reports every failure at once, so an offline
  machine learns in one message all that is missing.
- :func:`extract` unpacks into a fresh temporary folder, checks the archive end to end (a truncated
  tar or a zip member with a bad CRC fails) and moves the content into the destination only when
  everything succeeded. The data stage builds each dataset folder in a staging area and renames it
  into ``data/01_raw`` (:mod:`oquab_repro.lib.rawfolder`), so a half-extracted folder never looks
  finished. A full disk is reported as such (:class:`DiskFullError`), never as a corrupt archive.

ImageNet, which cannot be downloaded without an account, lives in :mod:`oquab_repro.lib.imagenet`.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

CHUNK = 1 << 20
BACKOFF_SECONDS = 1.0  # first wait between attempts; doubles after each failed attempt
BACKOFF_MAX_SECONDS = 30.0
UNREACHABLE_ATTEMPTS = 3  # a host that cannot be resolved or refuses connections: give up sooner
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
OFFLINE_FIX = (
    "connect to the network (downloads resume where they stopped), copy the files into"
    " data.full.download_dir by hand (they are verified and used as they are), or serve a mirror"
    " and set data.full.mirror (README, 'Rehearsing the full profile')"
)
EACH_FIX = (
    "fix each line as it says and run the stage again; archives already verified stay in "
    "data.full.download_dir and are not fetched again"
)


class DownloadError(RuntimeError):
    """A download or an archive failed; the message names the file and the fix."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the published (or the mirror manifest's) checksum."""


class TruncatedArchiveError(DownloadError):
    """The archive ends early or has corrupt members."""


class UnreachableError(DownloadError):
    """The host cannot be resolved or refuses connections."""


class DiskFullError(DownloadError):
    """No space left while downloading or extracting; nothing half-written is kept as finished."""


class MissingInputsError(DownloadError):
    """Several inputs of the full profile are missing or bad: each line names one and its fix."""

    def __init__(self, problems: list[str], fix: str = EACH_FIX):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{len(problems)} input(s) of the full profile are missing or bad; nothing was changed"
            f" in data/01_raw:\n{lines}\nFix: {fix}."
        )


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

    @property
    def mirror_path(self) -> str:
        """Where a mirror keeps it: the official URL's host and path
        (``wget --mirror``'s layout)."""
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.netloc}{parts.path}"


_VOC = "https://thor.robots.ox.ac.uk/pascal/VOC"
ARCHIVES: dict[str, Archive] = {
    # Pascal VOC: md5s as published with the devkits (and pinned by
    # torchvision.datasets.VOCDetection).
    "voc2007_trainval": Archive(
        f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar", "md5:c52e279531787c972589f7e41ab4ae64", "voc"
    ),
    "voc2007_test": Archive(
        f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar", "md5:b6e924de25625d8de591ea690078ad9f", "voc"
    ),
    "voc2012_trainval": Archive(
        f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar", "md5:6cd6e144f989b92b3379bac3b3de84fd", "voc"
    ),
    # COCO 2014: the COCO site publishes no checksums.
    "coco2014_train": Archive("http://images.cocodataset.org/zips/train2014.zip", None, "coco"),
    "coco2014_val": Archive("http://images.cocodataset.org/zips/val2014.zip", None, "coco"),
    "coco2014_annotations": Archive(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip", None, "coco"
    ),
    # LFW (funneled): md5 as pinned by torchvision.datasets.LFWPeople; the site is often down, put
    # the archive in data.full.download_dir by hand and it is verified and used as is.
    "lfw_funneled": Archive(
        "http://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz",
        "md5:1b42dfed7d15c9b2dd63d5e5840c86ad",
        "gan/lfw",
        "lfw_funneled",
    ),
    # LSUN bedroom (LMDB), as the LSUN download tool fetches it: no published checksum.
    "lsun_bedroom": Archive(
        "http://dl.yf.io/lsun/scenes/bedroom_train_lmdb.zip", None, "gan/lsun_bedroom"
    ),
    # ImageNet ResNet-34 (torchvision) to featurise GAN samples (§5.3.3); the file name carries
    # the first hex digits of its sha256, which torchvision checks the same way.
    "resnet34_imagenet": Archive(
        "https://download.pytorch.org/models/resnet34-b627a593.pth",
        "sha256:b627a593",
        "weights",
        unpack=False,
    ),
}

# The Tübingen cause-effect pairs v1.0 (§5.4.2): files at the zip's top level (pairNNNN.txt,
# pairNNNN_des.txt, pairmeta.txt, README); no published checksum. Not a data-stage archive: the
# `data_tuebingen` stage owns data/01_raw/tuebingen and can fetch it with :func:`fetch_archive`.
TUEBINGEN = Archive("https://webdav.tuebingen.mpg.de/cause-effect/pairs.zip", None, "tuebingen")


# ---------------------------------------------------------------------------------------------
# Sources: official host or mirror, published checksum or mirror manifest
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where to fetch an archive and what vouches for its bytes (named in error messages)."""

    url: str
    checksum: str | None
    authority: str  # "published" or "manifest <path>"


def read_manifest(path: Path) -> dict[str, str]:
    """A ``sha256sum``-format manifest (``<hex>  <relative path>`` per line) as ``{path: hex}``."""
    path = Path(path)
    if not path.is_file():
        raise DownloadError(
            f"data.full.mirror_manifest = {path}: file not found; point it at the mirror's"
            " SHA256SUMS (`oquab-repro mirror build DIR` writes DIR/SHA256SUMS) or set it to null."
        )
    entries = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise DownloadError(
                f"{path}:{lineno}: not a sha256sum line ('<64 hex digits>  <path>'); rebuild the"
                " manifest."
            )
        entries[match.group(2)] = match.group(1).lower()
    return entries


def source_of(
    archive: Archive,
    mirror: str | None,
    manifest: dict[str, str] | None,
    manifest_path: str | None = None,
) -> Source:
    """The URL and checksum of ``archive``: official, or from the mirror (and
    its manifest when given)."""
    if mirror is None:
        return Source(archive.url, archive.checksum, "published")
    url = f"{mirror.rstrip('/')}/{archive.mirror_path}"
    if manifest is None:
        return Source(url, archive.checksum, "published")
    if archive.mirror_path not in manifest:
        raise DownloadError(
            f"{manifest_path}: no entry for {archive.mirror_path}; rebuild the mirror's manifest "
            "or drop the archive from data.full.archives."
        )
    return Source(url, f"sha256:{manifest[archive.mirror_path]}", f"manifest {manifest_path}")


def manifest_checksum(manifest: dict[str, str] | None, filename: str) -> str | None:
    """The manifest's sha256 of a local file known by name only (e.g.
    ``ILSVRC2012_img_val.tar``)."""
    if not manifest:
        return None
    hits = [
        digest
        for rel, digest in manifest.items()
        if rel == filename or rel.endswith(f"/{filename}")
    ]
    return f"sha256:{hits[0]}" if len(hits) == 1 else None


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


def verify_checksum(path: Path, checksum: str | None, authority: str = "published") -> str:
    """Check ``path`` against ``"md5:…"``/``"sha256:…"``; return its sha256 (for the metrics)."""
    sha256 = file_digest(path, "sha256")
    if checksum is None:
        log.warning("%s: no published checksum; sha256 received = %s", path, sha256)
        return sha256
    algorithm, _, expected = checksum.partition(":")
    actual = sha256 if algorithm == "sha256" else file_digest(path, algorithm)
    if not actual.startswith(expected.lower()):
        said = (
            f"the published value is {expected}"
            if authority == "published"
            else f"the {authority} says {expected}"
        )
        raise ChecksumError(f"{path}: {algorithm} is {actual}, {said}.")
    return sha256


def _mismatch_cause(authority: str) -> str:
    if authority == "published":
        return "The download is corrupt or not the official archive"
    return (
        "The mirror serves a corrupt or truncated copy (rebuild it: `oquab-repro mirror build`), or"
        " its manifest is stale"
    )


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "oquab-repro"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _expected_total(response: http.client.HTTPResponse, offset: int) -> int | None:
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise DownloadError(
                f"{response.url}: server answered an unexpected range; delete the .part file."
            )
        return None if match.group(2) == "*" else int(match.group(2))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _unreachable(exc: BaseException) -> bool:
    """Name resolution failed or the host refused: retrying within seconds rarely helps."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or (
        isinstance(reason, OSError) and reason.errno in {errno.EHOSTUNREACH, errno.ENETUNREACH}
    )


def _progress_note(part: Path, total: int | None) -> str:
    """What a failed download leaves behind, stated as it is (never a .part that does not exist)."""
    if part.exists() and part.stat().st_size:
        of = f" of {total:,}" if total else ""
        return f"{part.stat().st_size:,}{of} bytes kept in {part}; run again to resume"
    return "nothing was downloaded"


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _write_stream(
    response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, name: str
) -> None:
    try:
        with (
            open(part, "ab" if offset else "wb") as handle,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=name, leave=False
            ) as bar,
        ):
            while block := response.read(CHUNK):
                handle.write(block)
                bar.update(len(block))
    except OSError as exc:
        if exc.errno in DISK_FULL:
            need = f"{(total - part.stat().st_size) / 1e9:.2f} GB more" if total else "more space"
            raise DiskFullError(
                f"{part}: disk full while downloading (needs {need}); free space on {part.parent}"
                f" or point data.full.download_dir at a larger disk. {_progress_note(part, total)}."
            ) from exc
        raise


def download(
    url: str,
    dest: Path,
    checksum: str | None,
    *,
    retries: int = 5,
    timeout: float = 60.0,
    authority: str = "published",
) -> str:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify it, rename it; return its sha256.

    An existing ``dest`` is verified and kept. Connection errors resume from the bytes already on
    disk, up to ``retries`` times, waiting 1, 2, 4... s in between; a host that cannot be reached
    at all is given up after :data:`UNREACHABLE_ATTEMPTS`. A checksum
    mismatch removes the bad bytes.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return _verify_existing(dest, checksum, authority)
    part = dest.with_name(dest.name + ".part")
    attempts, waited = 0, 0.0
    while True:
        attempts += 1
        complete, total, error = _attempt(url, part, timeout)
        if complete:
            break
        waited += _wait_or_give_up(
            url, error, attempts, retries, waited, _progress_note(part, total)
        )
    return _verify_and_rename(part, dest, checksum, authority)


_REMOVED = "; the bad file was removed, run the stage again to download it again."


def _verify_existing(dest: Path, checksum: str | None, authority: str) -> str:
    """A ``dest`` already on disk is kept if it verifies, removed (and named) if it does not."""
    try:
        return verify_checksum(dest, checksum, authority)
    except ChecksumError as exc:
        dest.unlink()
        raise ChecksumError(
            f"{exc} It was already in {dest.parent} (copied by hand, or an earlier download) "
            f"and is not the expected file{_REMOVED}"
        ) from None


def _attempt(url: str, part: Path, timeout: float) -> tuple[bool, int | None, BaseException | None]:
    """One request appending to ``part`` from where it ends: (complete, expected size, the error
    worth a retry). An HTTP error that no retry can fix (4xx) is raised at once."""
    offset = part.stat().st_size if part.exists() else 0
    total: int | None = None
    try:
        with _open(url, offset, timeout) as response:
            if offset and response.status == 200:  # server ignores Range: start again
                offset = 0
            total = _expected_total(response, offset)
            if total is not None and offset == total:
                return True, total, None
            _write_stream(response, part, offset, total, part.name.removesuffix(".part"))
        size = part.stat().st_size
        if total is None or size == total:
            return True, total, None
        return False, total, ConnectionError(f"connection closed at {size:,} of {total:,} bytes")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the .part is already complete
            return True, total, None
        if exc.code >= 500:  # the server's trouble, often passing: retry like a dropped connection
            return False, total, exc
        raise DownloadError(
            f"{url}: HTTP {exc.code} {exc.reason}; check the URL (or data.full.mirror) or copy "
            f"{part.name.removesuffix('.part')} into {part.parent} by hand "
            f"({_progress_note(part, total)})."
        ) from exc
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        return False, total, exc


def _wait_or_give_up(
    url: str, error: BaseException | None, attempts: int, retries: int, waited: float, progress: str
) -> float:
    """Sleep before the next attempt (1, 2, 4... s, capped) and return the delay, or raise once
    the attempts are spent: few for a host that cannot be reached, ``retries`` + 1 otherwise."""
    unreachable = _unreachable(error)
    limit = UNREACHABLE_ATTEMPTS if unreachable else retries + 1
    reason = getattr(error, "reason", error)
    if attempts >= limit:
        kind, what = (
            (UnreachableError, "unreachable")
            if unreachable
            else (DownloadError, "still incomplete")
        )
        raise kind(
            f"{url}: {what} after {attempts} attempts over {waited:.0f} s ({reason}); {progress}."
        )
    delay = min(BACKOFF_SECONDS * 2 ** (attempts - 1), BACKOFF_MAX_SECONDS)
    log.warning("%s: %s (attempt %d/%d); retrying in %.0f s", url, reason, attempts, limit, delay)
    _sleep(delay)
    return delay


def _verify_and_rename(part: Path, dest: Path, checksum: str | None, authority: str) -> str:
    """Only a verified download takes its final name; a bad one is removed and explained."""
    try:
        sha256 = verify_checksum(part, checksum, authority)
    except ChecksumError as exc:
        part.unlink()
        raise ChecksumError(
            f"{str(exc).replace(str(part), str(dest))} {_mismatch_cause(authority)}{_REMOVED}"
        ) from None
    os.replace(part, dest)
    return sha256


def download_all(
    names: Iterable[str],
    download_dir: Path,
    mirror: str | None = None,
    manifest_path: str | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Try every named archive; return the sha256 of each one fetched and one line per failure.

    Once a host proved unreachable, its other archives are not tried again (one DNS failure must
    not cost every archive its own round of retries); they are listed as missing all the same.
    """
    names = list(names)
    unknown = sorted(set(names) - set(ARCHIVES))
    if unknown:
        return {}, [
            f"params.yaml data.full.archives: unknown {unknown}; choose from {sorted(ARCHIVES)}"
        ]
    manifest = read_manifest(Path(manifest_path)) if manifest_path else None
    digests, problems, dead_hosts = {}, [], {}
    for name in names:
        archive = ARCHIVES[name]
        dest = Path(download_dir) / archive.filename
        try:
            source = source_of(archive, mirror, manifest, manifest_path)
            host = urllib.parse.urlsplit(source.url).netloc
            if host in dead_hosts and not dest.exists():
                problems.append(
                    f"{name} ({dest.name}): {source.url}: not tried, host {host} unreachable (as"
                    f" for {dead_hosts[host]}); nothing was downloaded"
                )
                continue
            digests[name] = download(source.url, dest, source.checksum, authority=source.authority)
        except UnreachableError as exc:
            dead_hosts[host] = name
            problems.append(f"{name} ({dest.name}): {exc} Fix: {OFFLINE_FIX}")
        except DiskFullError:
            raise  # the disk, not the archive: stop at once
        except DownloadError as exc:
            problems.append(f"{name} ({dest.name}): {exc}")
    return digests, problems


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def disk_full(exc: BaseException, what: Path, into: Path) -> DiskFullError | None:
    """A :class:`DiskFullError` naming what was being written, if ``exc`` is a full disk."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return DiskFullError(
            f"{what}: disk full while extracting into {into}"
            f" ({shutil.disk_usage(into).free / 1e9:.2f} GB free now). Free space there or point"
            " data.full.download_dir (where extraction is staged) at a larger disk; the partial"
            " extraction was removed and data/01_raw was not changed."
        )
    return None


def _check_and_extract(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                bad = handle.testzip()
                if bad is not None:
                    raise TruncatedArchiveError(
                        f"{archive}: member {bad} is corrupt; delete the archive and"
                        " re-download it."
                    )
                handle.extractall(into)
            return
        with tarfile.open(archive) as handle:
            handle.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        if (full := disk_full(exc, archive, into)) is not None:
            raise full from exc
        raise TruncatedArchiveError(
            f"{archive}: corrupt or truncated archive ({exc}); delete it and run the stage again to"
            " re-download it."
        ) from exc


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
    """Unpack ``archive`` (tar, tar.gz, zip) into ``into``; nothing lands
    there unless all of it does."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=into.parent, prefix=f".{into.name}.extract-"))
    try:
        _check_and_extract(Path(archive), scratch)
        root = scratch / strip if strip else scratch
        if not root.is_dir():
            raise TruncatedArchiveError(
                f"{archive}: expected a top-level folder '{strip}'; is it the official archive?"
            )
        _merge(root, into)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def install(name: str, download_dir: Path, staging: Path) -> None:
    """Put the verified download of archive ``name`` into
    ``staging/<dest>`` (extracted or copied)."""
    spec = ARCHIVES[name]
    path = Path(download_dir) / spec.filename
    if spec.unpack:
        log.info("Extracting %s into %s", path, spec.dest)
        extract(path, staging / spec.dest, spec.strip)
        return
    target = staging / spec.dest
    target.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(path, target / spec.filename)
    except OSError as exc:
        if (full := disk_full(exc, path, target)) is not None:
            raise full from exc
        raise


def fetch_archives(
    names: Iterable[str],
    download_dir: Path,
    staging: Path,
    mirror: str | None = None,
    manifest_path: str | None = None,
) -> dict[str, str]:
    """Download and verify every named archive, then (only if all succeeded)
    install them under ``staging``."""
    names = list(names)
    digests, problems = download_all(names, download_dir, mirror, manifest_path)
    if problems:
        raise MissingInputsError(problems)
    for name in names:
        install(name, download_dir, staging)
    return digests


def fetch_archive(
    archive: Archive,
    download_dir: Path,
    into: Path,
    mirror: str | None = None,
    manifest_path: str | None = None,
) -> str:
    """One archive outside :data:`ARCHIVES` (e.g. :data:`TUEBINGEN`) downloaded, verified
    and extracted into ``into``."""
    manifest = read_manifest(Path(manifest_path)) if manifest_path else None
    source = source_of(archive, mirror, manifest, manifest_path)
    sha256 = download(
        source.url,
        Path(download_dir) / archive.filename,
        source.checksum,
        authority=source.authority,
    )
    extract(Path(download_dir) / archive.filename, into, archive.strip)
    return sha256


def archive_bytes(paths: Iterable[Path]) -> int:
    """Bytes their extraction needs, estimated from the archives' sizes
    (zip: from the directory)."""
    total = 0
    for path in paths:
        path = Path(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as handle:
                total += sum(info.file_size for info in handle.infolist())
        else:
            total += path.stat().st_size
    return total


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Stop before extracting when ``folder``'s disk cannot hold ``needed`` bytes (plus 5%)."""
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise DiskFullError(
            f"{folder}: {free / 1e9:.2f} GB free, but extracting {what} needs about"
            f" {needed * 1.05 / 1e9:.2f} GB. Free space there or point data.full.download_dir"
            " (where extraction is staged) at a larger disk; nothing was extracted and data/01_raw"
            " was not changed."
        )
