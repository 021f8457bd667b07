"""Download and extraction against a real HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import errno
import hashlib
import io
import socket
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from oquab_repro.lib import download as dl
from oquab_repro.lib.rawfolder import replace_folder

from .http_server import ArchiveServer


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


# Incompressible content so the archive is larger than one read and cutting it loses real data.
CONTENT = {
    f"VOCdevkit/VOC2007/JPEGImages/{i:06d}.jpg": hashlib.sha256(str(i).encode()).digest() * 400
    for i in range(8)
}


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_good_archive_downloads_verifies_and_extracts(
    server: ArchiveServer, tmp_path: Path
) -> None:
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    dest = tmp_path / "dl" / "voc.tar.gz"
    sha = dl.download(server.url("/voc.tar.gz"), dest, md5(archive))
    assert sha == hashlib.sha256(archive).hexdigest() and dest.read_bytes() == archive
    assert not dest.with_name("voc.tar.gz.part").exists()
    dl.extract(dest, tmp_path / "raw" / "voc")
    for name, data in CONTENT.items():
        assert (tmp_path / "raw" / "voc" / name).read_bytes() == data
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["voc"]  # no scratch folder left
    # a second call finds the verified file and does not download again
    n = len(server.requests)
    dl.download(server.url("/voc.tar.gz"), dest, md5(archive))
    assert len(server.requests) == n


def test_wrong_checksum_raises_and_leaves_nothing(server: ArchiveServer, tmp_path: Path) -> None:
    server.files["/voc.tar.gz"] = make_tar(CONTENT)
    dest = tmp_path / "voc.tar.gz"
    with pytest.raises(
        dl.ChecksumError, match=r"voc.tar.gz: md5 is [0-9a-f]+, the published value is 0123"
    ):
        dl.download(server.url("/voc.tar.gz"), dest, "md5:0123456789abcdef0123456789abcdef")
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_is_accepted(server: ArchiveServer, tmp_path: Path) -> None:
    data = b"weights" * 1000
    server.files["/resnet34-abcd.pth"] = data
    prefix = hashlib.sha256(data).hexdigest()[:8]
    dl.download(server.url("/resnet34-abcd.pth"), tmp_path / "w.pth", f"sha256:{prefix}")
    assert (tmp_path / "w.pth").read_bytes() == data


def test_connection_cut_halfway_resumes_with_range(server: ArchiveServer, tmp_path: Path) -> None:
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    server.cut_next.add("/voc.tar.gz")
    dest = tmp_path / "voc.tar.gz"
    dl.download(server.url("/voc.tar.gz"), dest, md5(archive))
    assert dest.read_bytes() == archive
    assert server.requests == [
        ("/voc.tar.gz", None),
        ("/voc.tar.gz", f"bytes={len(archive) // 2}-"),
    ]


def test_interrupted_download_resumes_in_a_later_run(server: ArchiveServer, tmp_path: Path) -> None:
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    server.cut_next.add("/voc.tar.gz")
    dest = tmp_path / "voc.tar.gz"
    with pytest.raises(dl.DownloadError, match=r"still incomplete.*run again to resume"):
        dl.download(server.url("/voc.tar.gz"), dest, md5(archive), retries=0)
    assert (
        not dest.exists() and dest.with_name("voc.tar.gz.part").stat().st_size == len(archive) // 2
    )
    dl.download(server.url("/voc.tar.gz"), dest, md5(archive))
    assert dest.read_bytes() == archive and server.requests[-1][1] == f"bytes={len(archive) // 2}-"


@pytest.mark.parametrize("maker", [make_tar, make_zip])
def test_truncated_archive_is_rejected_and_nothing_is_extracted(
    server: ArchiveServer, tmp_path: Path, maker: object
) -> None:
    full = maker(CONTENT)  # type: ignore[operator]
    truncated = full[: int(len(full) * 0.6)]
    server.files["/a"] = (
        truncated  # the server itself serves a short file: the checksum is what it got
    )
    dest = tmp_path / "dl" / "a"
    dl.download(server.url("/a"), dest, None)
    into = tmp_path / "raw" / "voc"
    with pytest.raises(dl.TruncatedArchiveError, match=r"a: corrupt or truncated"):
        dl.extract(dest, into)
    assert not any(into.rglob("*")) and [p.name for p in (tmp_path / "raw").iterdir()] == ["voc"]


def test_staged_dataset_appears_only_when_complete(
    server: ArchiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = make_tar(CONTENT)
    bad = make_tar({"VOCdevkit/VOC2007/Annotations/000001.xml": b"<annotation/>" * 500})
    bad = bad[: len(bad) // 2]
    server.files["/good.tar.gz"] = good
    server.files["/bad.tar.gz"] = bad
    monkeypatch.setitem(
        dl.ARCHIVES, "t_good", dl.Archive(server.url("/good.tar.gz"), md5(good), "voc")
    )
    monkeypatch.setitem(
        dl.ARCHIVES, "t_bad", dl.Archive(server.url("/bad.tar.gz"), md5(bad), "voc")
    )
    raw, staging = tmp_path / "01_raw", tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(dl.TruncatedArchiveError):
        dl.fetch_archives(["t_good", "t_bad"], tmp_path / "dl", staging)
    assert not (raw / "voc").exists()  # the stage failed before moving anything into data/01_raw
    digests = dl.fetch_archives(["t_good"], tmp_path / "dl", staging)
    replace_folder(staging / "voc", raw / "voc")
    assert digests["t_good"] == hashlib.sha256(good).hexdigest()
    assert (raw / "voc" / next(iter(CONTENT))).is_file()


def test_unknown_archive_name_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(dl.MissingInputsError, match=r"data.full.archives: unknown \['voc1999'\]"):
        dl.fetch_archives(["voc1999"], tmp_path, tmp_path)


def test_http_error_names_the_url(server: ArchiveServer, tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match=r"/missing: HTTP 404"):
        dl.download(server.url("/missing"), tmp_path / "x", None)


# ------------------------------------------------------------------------- retries, offline, mirror


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits between attempts instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(dl, "_sleep", waits.append)
    return waits


def _dns_failure(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL fails like a machine without DNS; return the URLs tried."""
    tried: list[str] = []

    def fail(request: urllib.request.Request, timeout: float) -> None:
        tried.append(request.full_url)
        raise urllib.error.URLError(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", fail)
    return tried


def test_dns_failure_backs_off_and_claims_no_part_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    tried = _dns_failure(monkeypatch)
    with pytest.raises(dl.UnreachableError) as err:
        dl.download("https://thor.robots.ox.ac.uk/x.tar", tmp_path / "x.tar", None)
    message = str(err.value)
    assert (
        "unreachable after 3 attempts over 3 s" in message
        and "Name or service not known" in message
    )
    assert "nothing was downloaded" in message and ".part" not in message and "kept" not in message
    assert len(tried) == dl.UNREACHABLE_ATTEMPTS and sleeps == [
        1.0,
        2.0,
    ]  # backs off, not six tries in a second
    assert not any(tmp_path.iterdir())


def test_dropped_connections_back_off_exponentially_and_say_what_is_kept(
    server: ArchiveServer, tmp_path: Path, sleeps: list[float]
) -> None:
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    server.cut_next.update({"/voc.tar.gz"})
    original = server.httpd.RequestHandlerClass.do_GET

    def always_cut(handler: object) -> None:  # every response stops halfway
        server.cut_next.add("/voc.tar.gz")
        original(handler)  # type: ignore[arg-type]

    server.httpd.RequestHandlerClass.do_GET = always_cut  # type: ignore[method-assign]
    dest = tmp_path / "voc.tar.gz"
    with pytest.raises(
        dl.DownloadError,
        match=(
            r"still incomplete after 4 attempts over 7 s .* bytes kept in .*voc.tar.gz.part; run"
            r" again to resume"
        ),
    ):
        dl.download(server.url("/voc.tar.gz"), dest, md5(archive), retries=3)
    assert sleeps == [1.0, 2.0, 4.0]
    server.httpd.RequestHandlerClass.do_GET = original  # type: ignore[method-assign]
    dl.download(
        server.url("/voc.tar.gz"), dest, md5(archive)
    )  # and the next run resumes to the end
    assert dest.read_bytes() == archive


def test_offline_report_names_every_missing_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    tried = _dns_failure(monkeypatch)
    names = list(dl.ARCHIVES)
    digests, problems = dl.download_all(names, tmp_path)
    assert digests == {} and len(problems) == len(names) == 9
    for name, line in zip(names, problems, strict=True):
        assert (
            line.startswith(f"{name} ({dl.ARCHIVES[name].filename})")
            and "nothing was downloaded" in line
        )
    hosts = {urllib.parse.urlsplit(u).netloc for u in tried}
    assert len(tried) == dl.UNREACHABLE_ATTEMPTS * len(
        hosts
    )  # one round of retries per host, not per archive
    error = dl.MissingInputsError(problems)
    assert "9 input(s)" in str(error) and all(
        a.filename in str(error) for a in dl.ARCHIVES.values()
    )


def test_mirror_and_manifest_replace_host_and_checksum(
    server: ArchiveServer, tmp_path: Path
) -> None:
    archive = dl.ARCHIVES["voc2007_test"]
    data = make_tar(CONTENT)
    server.files[f"/{archive.mirror_path}"] = data
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"{hashlib.sha256(data).hexdigest()}  {archive.mirror_path}\n")
    mirror = server.url("")
    source = dl.source_of(archive, mirror, dl.read_manifest(manifest), str(manifest))
    assert source.url == f"{mirror}/thor.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar"
    assert source.checksum == f"sha256:{hashlib.sha256(data).hexdigest()}"
    digests, problems = dl.download_all(["voc2007_test"], tmp_path / "dl", mirror, str(manifest))
    assert problems == [] and digests["voc2007_test"] == hashlib.sha256(data).hexdigest()
    # without the manifest the published md5 applies to the mirror's copy, and it does not match
    (tmp_path / "dl" / archive.filename).unlink()
    _, problems = dl.download_all(["voc2007_test"], tmp_path / "dl", mirror, None)
    assert len(problems) == 1 and "the published value is b6e924de" in problems[0]


def test_manifest_mismatch_blames_the_mirror(server: ArchiveServer, tmp_path: Path) -> None:
    archive = dl.ARCHIVES["voc2007_test"]
    server.files[f"/{archive.mirror_path}"] = make_tar(CONTENT)
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text(f"{'0' * 64}  {archive.mirror_path}\n")
    _, problems = dl.download_all(["voc2007_test"], tmp_path / "dl", server.url(""), str(manifest))
    assert (
        "the manifest " in problems[0]
        and "SHA256SUMS says 0000" in problems[0]
        and "oquab-repro mirror build" in problems[0]
    )
    assert not any((tmp_path / "dl").iterdir())  # the bad bytes are gone, no .part either


def test_server_errors_are_retried(
    server: ArchiveServer, tmp_path: Path, sleeps: list[float]
) -> None:
    data = b"x" * 5000
    server.files["/w"] = data
    failures = iter([503])
    original = server.httpd.RequestHandlerClass.do_GET

    def flaky(handler: object) -> None:
        code = next(failures, None)
        if code is not None:
            handler.send_error(code)  # type: ignore[attr-defined]
            return
        original(handler)  # type: ignore[arg-type]

    server.httpd.RequestHandlerClass.do_GET = flaky  # type: ignore[method-assign]
    try:
        dl.download(server.url("/w"), tmp_path / "w", None)
    finally:
        server.httpd.RequestHandlerClass.do_GET = original  # type: ignore[method-assign]
    assert (tmp_path / "w").read_bytes() == data and sleeps == [1.0]


def test_full_disk_while_downloading_names_the_file(
    server: ArchiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/big"] = b"y" * (3 * dl.CHUNK)
    real_open = open

    class FullDisk:
        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()  # type: ignore[attr-defined]

        def write(self, block: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        dl, "open", lambda path, mode="r": FullDisk(real_open(path, mode)), raising=False
    )
    with pytest.raises(
        dl.DiskFullError,
        match=(
            r"big.part: disk full while downloading \(needs 0.00 GB more\).*data.full.download_dir"
        ),
    ):
        dl.download(server.url("/big"), tmp_path / "big", None)
    assert not (tmp_path / "big").exists()


def test_full_disk_while_extracting_is_not_called_a_corrupt_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "voc.tar.gz"
    archive.write_bytes(make_tar(CONTENT))

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "makefile", no_space)
    into = tmp_path / "staging" / "voc"
    with pytest.raises(
        dl.DiskFullError,
        match=r"voc.tar.gz: disk full while extracting into .*staging.*data.full.download_dir",
    ):
        dl.extract(archive, into)
    assert not any(into.rglob("*")) and [p.name for p in (tmp_path / "staging").iterdir()] == [
        "voc"
    ]


def test_free_space_is_checked_before_extracting(tmp_path: Path) -> None:
    with pytest.raises(
        dl.DiskFullError,
        match=r"GB free, but extracting everything needs about .* nothing was extracted",
    ):
        dl.check_free_space(tmp_path, 10**18, "everything")
