"""Download and extraction against a real HTTP server on 127.0.0.1 serving archives built here."""

from __future__ import annotations

import hashlib
import io
import tarfile
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
CONTENT = {f"VOCdevkit/VOC2007/JPEGImages/{i:06d}.jpg": hashlib.sha256(str(i).encode()).digest() * 400 for i in range(8)}


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def test_good_archive_downloads_verifies_and_extracts(server: ArchiveServer, tmp_path: Path) -> None:
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
    with pytest.raises(dl.ChecksumError, match=r"voc.tar.gz: md5 is [0-9a-f]+, the published value is 0123"):
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
    assert server.requests == [("/voc.tar.gz", None), ("/voc.tar.gz", f"bytes={len(archive) // 2}-")]


def test_interrupted_download_resumes_in_a_later_run(server: ArchiveServer, tmp_path: Path) -> None:
    archive = make_tar(CONTENT)
    server.files["/voc.tar.gz"] = archive
    server.cut_next.add("/voc.tar.gz")
    dest = tmp_path / "voc.tar.gz"
    with pytest.raises(dl.DownloadError, match=r"still incomplete.*run again to resume"):
        dl.download(server.url("/voc.tar.gz"), dest, md5(archive), retries=0)
    assert not dest.exists() and dest.with_name("voc.tar.gz.part").stat().st_size == len(archive) // 2
    dl.download(server.url("/voc.tar.gz"), dest, md5(archive))
    assert dest.read_bytes() == archive and server.requests[-1][1] == f"bytes={len(archive) // 2}-"


@pytest.mark.parametrize("maker", [make_tar, make_zip])
def test_truncated_archive_is_rejected_and_nothing_is_extracted(
    server: ArchiveServer, tmp_path: Path, maker: object
) -> None:
    full = maker(CONTENT)  # type: ignore[operator]
    truncated = full[: int(len(full) * 0.6)]
    server.files["/a"] = truncated  # the server itself serves a short file: the checksum is what it got
    dest = tmp_path / "dl" / "a"
    dl.download(server.url("/a"), dest, None)
    into = tmp_path / "raw" / "voc"
    with pytest.raises(dl.TruncatedArchiveError, match=r"a: corrupt or truncated"):
        dl.extract(dest, into)
    assert not any(into.rglob("*")) and [p.name for p in (tmp_path / "raw").iterdir()] == ["voc"]


def test_staged_dataset_appears_only_when_complete(server: ArchiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = make_tar(CONTENT)
    bad = make_tar({"VOCdevkit/VOC2007/Annotations/000001.xml": b"<annotation/>" * 500})
    bad = bad[: len(bad) // 2]
    server.files["/good.tar.gz"] = good
    server.files["/bad.tar.gz"] = bad
    monkeypatch.setitem(dl.ARCHIVES, "t_good", dl.Archive(server.url("/good.tar.gz"), md5(good), "voc"))
    monkeypatch.setitem(dl.ARCHIVES, "t_bad", dl.Archive(server.url("/bad.tar.gz"), md5(bad), "voc"))
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
    with pytest.raises(dl.DownloadError, match=r"data.full.archives: unknown \['voc1999'\]"):
        dl.fetch_archives(["voc1999"], tmp_path, tmp_path)


def test_http_error_names_the_url(server: ArchiveServer, tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match=r"/missing: HTTP 404"):
        dl.download(server.url("/missing"), tmp_path / "x", None)


# ------------------------------------------------------------------------------ ImageNet


def test_imagenet_path_missing_says_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(dl.DownloadError, match=r"not found.*ILSVRC2012_img_train.tar"):
        dl.prepare_imagenet(tmp_path / "absent", tmp_path / "out", verify_md5=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(dl.DownloadError, match=r"missing: ILSVRC2012_img_train.tar, ILSVRC2012_devkit_t12.tar.gz"):
        dl.prepare_imagenet(tmp_path / "src", tmp_path / "out", verify_md5=False)


def test_imagenet_folders_are_validated_and_linked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537", "n01484850"):
            (src / split / wnid).mkdir(parents=True)
            (src / split / wnid / f"{wnid}_1.JPEG").write_bytes(b"x")
    counts = dl.prepare_imagenet(src, tmp_path / "out", verify_md5=False, expected_classes=3)
    assert counts == {"imagenet_train_images": 3, "imagenet_val_images": 3}
    (src / "val" / "n01484850" / "n01484850_1.JPEG").unlink()
    (src / "val" / "n01484850").rmdir()
    with pytest.raises(dl.DownloadError, match=r"val/ has 2 of 3 class folders"):
        dl.prepare_imagenet(src, tmp_path / "out2", verify_md5=False, expected_classes=3)


def test_class_sets_from_wordnet() -> None:
    is_a = [("n00000001", "n02370806"), ("n02370806", "n00000010"), ("n00000010", "n00000011"), ("n00000001", "n00000020")]
    ilsvrc = ["n00000100", "n00000101"]
    fall11 = ["n00000010", "n00000011", "n00000020", "n00000100", "n00000101", "n02370806"]
    sets = dl.class_sets(ilsvrc, fall11, is_a, seed=0)
    assert sets["in1512"] == sorted(["n00000100", "n00000101", "n02370806", "n00000010", "n00000011"])
    assert len(sets["in1000r"]) == 2 and set(sets["in1000r"]) <= set(fall11)
    assert sets["in1000r"] == dl.class_sets(ilsvrc, fall11, is_a, seed=0)["in1000r"]
    assert dl.class_sets(ilsvrc, None, None, seed=0) == {"in1000c": ilsvrc}
