"""ILSVRC-2012 from folders or official-layout archives, the fall 2011
synsets, WordNet class sets."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from oquab_repro.lib import imagenet as inet
from oquab_repro.lib import mirror
from oquab_repro.lib.mirror_counts import MirrorCounts

from .conftest import SMALL_MIRROR

COUNTS = MirrorCounts(**SMALL_MIRROR)


@pytest.fixture()
def archives(small_mirror: Path) -> Path:
    """The rehearsal mirror's ImageNet part (ILSVRC2012/, fall11/,
    wordnet/); shared, never modified."""
    return small_mirror


def test_missing_path_says_what_to_download(tmp_path: Path) -> None:
    found, problems = inet.find_ilsvrc(tmp_path / "absent")
    assert (
        found is None
        and "folder not found" in problems[0]
        and "ILSVRC2012_img_train.tar" in problems[0]
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ILSVRC2012_img_val.tar").write_bytes(b"")
    _, problems = inet.find_ilsvrc(tmp_path / "src")
    assert "missing: ILSVRC2012_img_train.tar, ILSVRC2012_devkit_t12.tar.gz" in problems[0]


def _folders(src: Path, wnids: list[str]) -> None:
    for split in ("train", "val"):
        for wnid in wnids:
            (src / split / wnid).mkdir(parents=True)
            (src / split / wnid / f"{wnid}_1.JPEG").write_bytes(b"x")


def test_folders_are_linked_and_a_missing_class_folder_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _folders(src, ["n01440764", "n01443537", "n01484850"])
    found, problems = inet.find_ilsvrc(src, expected_classes=3)
    assert problems == [] and found is not None
    assert inet.install_ilsvrc(found, tmp_path / "out") == {
        "imagenet_train_images": 3,
        "imagenet_val_images": 3,
    }
    assert (
        tmp_path / "out" / "train" / "n01443537" / "n01443537_1.JPEG"
    ).stat().st_nlink == 2  # linked, not copied
    for f in (src / "train" / "n01484850").iterdir():
        f.unlink()
    (src / "train" / "n01484850").rmdir()
    found, problems = inet.find_ilsvrc(src, expected_classes=3)
    assert found is None and problems == [
        f"{src / 'train'}/: class folder(s) n01484850 missing; re-extract ILSVRC-2012 (or restore"
        " them), or point data.full.imagenet_path at the folder of the archives"
    ]


def test_folders_without_devkit_must_hold_every_class(tmp_path: Path) -> None:
    _folders(tmp_path, ["n01440764", "n01443537"])
    _, problems = inet.find_ilsvrc(tmp_path)
    assert (
        "2 class folders, ILSVRC-2012 has 1000" in problems[0]
        and "ILSVRC2012_devkit_t12.tar.gz" in problems[0]
    )


def test_official_archives_are_streamed_into_class_folders(archives: Path, tmp_path: Path) -> None:
    found, problems = inet.find_ilsvrc(archives / mirror.ILSVRC_DIR)
    assert problems == [] and found is not None and found.layout == "archives"
    assert (
        len(found.classes) == COUNTS.imagenet_classes
        and len(found.val_wnids) == COUNTS.imagenet_classes * COUNTS.imagenet_val
    )
    counts = inet.install_ilsvrc(found, tmp_path / "out")
    assert counts == {"imagenet_train_images": 20 * 2, "imagenet_val_images": 20}
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == list(found.classes)
    assert sorted(p.name for p in (tmp_path / "out" / "val").iterdir()) == list(found.classes)
    assert not list(
        (tmp_path / "out" / "train").glob("*.tar")
    )  # per-class tars unpacked, not left behind
    # the devkit's ground truth decides each val image's class, in file-name order
    with tarfile.open(archives / mirror.ILSVRC_DIR / "ILSVRC2012_img_val.tar") as tar:
        first = sorted(tar.getnames())[0]
    assert (tmp_path / "out" / "val" / found.val_wnids[0] / first).is_file()
    assert (tmp_path / "out" / "synsets.txt").read_text().count("\n") == COUNTS.imagenet_classes


def test_published_md5_or_manifest_checksum(archives: Path) -> None:
    found, _ = inet.find_ilsvrc(archives / mirror.ILSVRC_DIR)
    problems = inet.verify_ilsvrc(found, None)  # the mirror's archives are not the official bytes
    assert (
        len(problems) == 3
        and "the published value is 1d675b47" in problems[0]
        and "image-net.org" in problems[0]
    )
    manifest = {p.relative_to(archives).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in (archives / mirror.ILSVRC_DIR).iterdir()}  # fmt: skip
    assert inet.verify_ilsvrc(found, manifest) == []


def test_a_missing_class_tar_inside_the_train_archive_is_named(
    archives: Path, tmp_path: Path
) -> None:
    src = tmp_path / "ILSVRC2012"
    src.mkdir()
    for name in ("ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"):
        (src / name).symlink_to(archives / mirror.ILSVRC_DIR / name)
    with (
        tarfile.open(archives / mirror.ILSVRC_DIR / "ILSVRC2012_img_train.tar") as full,
        tarfile.open(src / "ILSVRC2012_img_train.tar", "w") as cut,
    ):
        members = full.getmembers()
        for member in members[1:]:
            cut.addfile(member, full.extractfile(member))
    _, problems = inet.find_ilsvrc(src)
    assert problems and f"no per-class tar for {Path(members[0].name).stem}" in problems[0]


def test_fall11_synsets_are_split_into_train_and_val(archives: Path, tmp_path: Path) -> None:
    fall11 = (archives / mirror.WORDNET_DIR / "fall11_wnids.txt").read_text().split()
    found, _ = inet.find_ilsvrc(archives / mirror.ILSVRC_DIR)
    wanted = sorted(set(fall11) - set(found.classes))[:5]
    index, problems = inet.find_fall11(archives / mirror.FALL11_DIR, wanted, tmp_path)
    assert problems == [] and index is not None and index.whole
    counts = inet.install_fall11(index, tmp_path / "out", val_per_class=50, seed=0)
    assert counts == {
        "fall11_synsets": 5,
        "fall11_train_images": 5,
        "fall11_val_images": 5,
    }  # 2 images: 1 held out
    again = inet.install_fall11(index, tmp_path / "again", val_per_class=50, seed=0)
    assert again == counts and sorted(
        p.name for p in (tmp_path / "again" / "val" / wanted[0]).iterdir()
    ) == sorted(p.name for p in (tmp_path / "out" / "val" / wanted[0]).iterdir())
    assert inet.held_out(1300, 50) == 50 and inet.held_out(3, 50) == 1


def test_fall11_loose_tars_and_folders_and_missing_synsets(archives: Path, tmp_path: Path) -> None:
    src = tmp_path / "fall11"
    src.mkdir()
    with tarfile.open(archives / mirror.FALL11_DIR / inet.FALL11_WHOLE) as whole:
        names = sorted(whole.getnames())[:3]
        for name in names[:2]:
            (src / name).write_bytes(whole.extractfile(name).read())  # <wnid>.tar
        with tarfile.open(fileobj=whole.extractfile(names[2])) as inner:
            inner.extractall(src / Path(names[2]).stem, filter="data")  # <wnid>/ folder
    wanted = [Path(n).stem for n in names]
    index, problems = inet.find_fall11(src, wanted, tmp_path / "report")
    assert problems == [] and {k for k, _ in index.members.values()} == {"file"}
    assert inet.install_fall11(index, tmp_path / "out", 1, 0)["fall11_train_images"] == 3
    _, problems = inet.find_fall11(src, [*wanted, "n99999998", "n99999999"], tmp_path / "report")
    assert (
        "2 of the 5 fall 2011 synsets that 1000R / 1512 need are missing (n99999998, n99999999"
        in problems[0]
    )
    assert (tmp_path / "report" / inet.MISSING_FALL11_LIST).read_text().split() == [
        "n99999998",
        "n99999999",
    ]


def test_class_sets_from_wordnet() -> None:
    is_a = [
        ("n00000001", "n02370806"),
        ("n02370806", "n00000010"),
        ("n00000010", "n00000011"),
        ("n00000001", "n00000020"),
    ]
    ilsvrc = ["n00000100", "n00000101"]
    fall11 = ["n00000010", "n00000011", "n00000020", "n00000100", "n00000101", "n02370806"]
    sets = inet.class_sets(ilsvrc, fall11, is_a, seed=0)
    assert sets["in1512"] == sorted(
        ["n00000100", "n00000101", "n02370806", "n00000010", "n00000011"]
    )
    assert len(sets["in1000r"]) == 2 and set(sets["in1000r"]) <= set(fall11)
    assert sets["in1000r"] == inet.class_sets(ilsvrc, fall11, is_a, seed=0)["in1000r"]
    assert inet.class_sets(ilsvrc, None, None, seed=0) == {"in1000c": ilsvrc}


def test_mirror_wordnet_gives_the_thesis_set_sizes(archives: Path) -> None:
    wordnet, problems = inet.read_wordnet(
        archives / mirror.WORDNET_DIR / "fall11_wnids.txt",
        archives / mirror.WORDNET_DIR / "wordnet.is_a.txt",
    )
    found, _ = inet.find_ilsvrc(archives / mirror.ILSVRC_DIR)
    sets = inet.class_sets(list(found.classes), *wordnet, seed=0)
    assert {k: len(v) for k, v in sets.items()} == {
        "in1000c": 20,
        "in1000r": 20,
        "in1512": 20 + COUNTS.fall11_subtree,
    }
    _, problems = inet.read_wordnet(Path("/nonexistent/fall11.txt"), Path("/nonexistent/is_a.txt"))
    assert (
        len(problems) == 2
        and "data.full.wordnet_fall11_path" in problems[0]
        and "data.full.wordnet_is_a_path" in problems[1]
    )
