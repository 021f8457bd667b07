"""DCGAN shapes, resumable adversarial training, and the two-sample tests
used to judge GAN samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from oquab_repro.lib import twosample as ts
from oquab_repro.lib.adversarial import GanConfig, discriminator_classifier, sample, train_gans
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.features import build_featuriser, knn_coverage
from oquab_repro.lib.models.dcgan import Discriminator, Generator, split_state, stack_states


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("width", [4, 32, 64, 96])
def test_generator_and_discriminator_shapes(size: int, width: int) -> None:
    gen, disc = Generator(width, size), Discriminator(width, size)
    images = gen(torch.randn(3, 100))
    assert images.shape == (3, 3, size, size)
    assert images.abs().max() <= 1.0  # tanh output
    assert disc(images).shape == (3,)
    blocks = int(np.log2(size)) - 2
    convs = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [
        width * 2 ** (blocks - 1 - i) for i in range(blocks)
    ] + [3]
    dconvs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in dconvs] == [width * 2**i for i in range(blocks)] + [1]


def test_grouped_networks_are_independent_models() -> None:
    """models=M holds M networks: each output block equals its one-model
    network, weights round-trip."""
    torch.manual_seed(0)
    gens, discs = [Generator(4, 16) for _ in range(3)], [Discriminator(8, 16) for _ in range(3)]
    g3, d3 = Generator(4, 16, models=3), Discriminator(8, 16, models=3)
    g3.load_state_dict(stack_states([g.state_dict() for g in gens]))
    d3.load_state_dict(stack_states([d.state_dict() for d in discs]))
    for single, back in zip(gens, split_state(g3.state_dict(), 3), strict=True):
        assert all(torch.equal(v, back[k]) for k, v in single.state_dict().items())
    z, x = torch.randn(5, 100), torch.randn(5, 9, 16, 16)
    images, logits = g3(z.repeat(1, 3)), d3(x)
    assert images.shape == (5, 9, 16, 16) and logits.shape == (5, 3)
    for m in range(3):
        torch.testing.assert_close(images[:, 3 * m : 3 * m + 3], gens[m](z), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            logits[:, m], discs[m](x[:, 3 * m : 3 * m + 3]), atol=1e-5, rtol=0
        )


def test_bad_image_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Generator(8, 48)


def _blobs(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Images of one bright Gaussian blob at a random place on a dark background, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(4, size - 4, (n, 2))
    blob = np.exp(
        -((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
        / 8.0
    )
    colour = rng.uniform(0.5, 1.0, (n, 3, 1, 1))
    return torch.as_tensor(blob[:, None] * colour * 2 - 1, dtype=torch.float32)


def _noise_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _bundle_file(folder: Path) -> Path:
    """A small Ch. 3-style AlexNet bundle (random weights) as the pretrain stage writes it."""
    from oquab_repro.lib.bundles import write_bundle
    from oquab_repro.lib.models.alexnet import AlexNet, spec_from_params, to_bundle

    conv = [
        {"channels": c, "kernel": 3, "stride": 1, "padding": 1, "lrn": False, "pool": p}
        for c, p in [(8, 2), (8, 2), (8, 0), (8, 0), (8, 2)]
    ]
    torch.manual_seed(0)
    net = AlexNet(spec_from_params(24, conv, fc_dim=32, dropout=0.5), num_classes=5)
    path = folder / "weights.safetensors"
    write_bundle(to_bundle(net, [f"c{i}" for i in range(5)], [0.5] * 3, [0.25] * 3), path)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return _bundle_file(tmp_path_factory.mktemp("pretrain"))


@pytest.fixture(scope="module")
def featurise(bundle: Path):
    return build_featuriser(
        "alexnet_bundle", weights=bundle, sha256_prefix=None, input_size=24, seed=0
    )


def test_pretrained_alexnet_featuriser(bundle: Path, featurise) -> None:
    """FC7 of the Ch. 3 bundle: one 32-d vector per image, deterministic (eval mode: no dropout)."""
    images = _blobs(7, 0, size=32)
    a, b = featurise(images), featurise(images)
    assert a.shape == (7, 32) and a.dtype == np.float32 and (a >= 0).all()  # after FC7's ReLU
    assert np.array_equal(a, b)
    again = build_featuriser(
        "alexnet_bundle", weights=bundle, sha256_prefix=None, input_size=24, seed=1
    )
    assert np.array_equal(a, again(images))  # the seed plays no part: pretrained weights only
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*dvc repro pretrain"):
        build_featuriser(
            "alexnet_bundle",
            weights=bundle.parent / "missing.safetensors",
            sha256_prefix=None,
            input_size=24,
            seed=0,
        )
    with pytest.raises(ValueError, match="input_size is 32; set it to 24"):
        build_featuriser(
            "alexnet_bundle", weights=bundle, sha256_prefix=None, input_size=32, seed=0
        )
    garbage = bundle.parent / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="garbage.safetensors: not a readable AlexNet bundle"):
        build_featuriser(
            "alexnet_bundle", weights=garbage, sha256_prefix=None, input_size=24, seed=0
        )
    with pytest.raises(ValueError, match="unknown gan featuriser"):
        build_featuriser("vgg", weights=None, sha256_prefix=None, input_size=24, seed=0)


def test_c2st_is_near_half_for_two_real_samples_and_near_one_for_different_sets(featurise) -> None:
    a, b, c = _blobs(300, 1), _blobs(300, 2), _noise_images(300, 3)
    fa, fb, fc = featurise(a), featurise(b), featurise(c)
    same = ts.c2st(fa, fb, ts.knn_classifier, 0.5, seed=0)
    different = ts.c2st(fa, fc, ts.knn_classifier, 0.5, seed=0)
    assert abs(same.statistic - 0.5) < 0.12 and not same.rejects(0.01)
    assert different.statistic > 0.95 and different.rejects(0.01)
    pixel = discriminator_classifier(df=8, epochs=8, lr=1e-3, batch_size=32)
    same_px = ts.c2st(a.numpy(), b.numpy(), pixel, 0.5, seed=0)
    diff_px = ts.c2st(a.numpy(), c.numpy(), pixel, 0.5, seed=0)
    assert abs(same_px.statistic - 0.5) < 0.12
    assert diff_px.statistic > 0.95


def test_coverage_separates_a_collapsed_sample() -> None:
    real, other = _blobs(200, 1).numpy(), _blobs(200, 2).numpy()
    collapsed = np.repeat(other[:1], 200, axis=0)  # one mode repeated
    assert knn_coverage(real, other, k=5) > 0.7
    assert knn_coverage(real, collapsed, k=5) < 0.1


class _Crash(RuntimeError):
    pass


class _CrashingCheckpointer(Checkpointer):
    """Dies right after saving ``crash_after``, as a killed job would."""

    def __init__(self, folder: Path, crash_after: int):
        super().__init__(folder)
        self.crash_after = crash_after

    def save(self, epoch: int, state: dict) -> Path:
        path = super().save(epoch, state)
        if epoch == self.crash_after:
            raise _Crash(epoch)
        return path


def _tiny_run(tmp: Path, name: str, checkpointer_cls=Checkpointer, cells=((4, 4),), **kwargs):
    data = TensorDataset(_blobs(40, 5, size=8))
    data = [x for (x,) in data]  # items are plain image tensors, as GanImages gives
    cfg = GanConfig(
        gf=4, df=4, image_size=8, batch_size=8, lr=2e-4, beta1=0.5, snapshot_epochs=(1, 3), seed=7
    )
    ckpt = checkpointer_cls(tmp / name, **kwargs)
    return train_gans(
        data, [replace(cfg, gf=g, df=d) for g, d in cells], ckpt, torch.device("cpu"), desc=name
    ), ckpt


@pytest.mark.parametrize(
    "cells", [((4, 4),), ((2, 4), (4, 4), (4, 2))], ids=["one model", "grouped grid"]
)
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, cells) -> None:
    straight, _ = _tiny_run(tmp_path, "straight", cells=cells)
    with pytest.raises(_Crash):
        _tiny_run(tmp_path, "resumed", _CrashingCheckpointer, cells=cells, crash_after=2)
    resumed, _ = _tiny_run(tmp_path, "resumed", cells=cells)
    for (gf, _), (a, history), (b, history2) in zip(cells, straight, resumed, strict=True):
        assert sorted(a) == sorted(b) == [1, 3]
        for epoch in a:
            for key, value in a[epoch].items():
                assert torch.equal(value, b[epoch][key]), (
                    f"epoch {epoch}: {key} differs after resume"
                )
        assert history.drop(columns="seconds_per_step").equals(
            history2.drop(columns="seconds_per_step")
        )
        assert torch.equal(sample(a[3], gf, 8, 5, seed=1), sample(b[3], gf, 8, 5, seed=1))


def test_a_grid_trained_together_matches_lone_runs(tmp_path: Path) -> None:
    """Grouped training of a 2×2 gf × df grid gives each model the weights of its own run."""
    data = [x for x in _blobs(32, 5, size=8)]
    base = GanConfig(
        gf=4, df=4, image_size=8, batch_size=8, lr=2e-4, beta1=0.5, snapshot_epochs=(1, 2), seed=7
    )
    cfgs = [replace(base, gf=g, df=d) for g in (2, 4) for d in (2, 4)]
    together = train_gans(data, cfgs, Checkpointer(tmp_path / "grid"), torch.device("cpu"))
    for i, cfg in enumerate(cfgs):
        ((alone, history),) = train_gans(
            data, [cfg], Checkpointer(tmp_path / f"alone{i}"), torch.device("cpu")
        )
        for epoch, state in alone.items():
            for key, value in state.items():
                torch.testing.assert_close(
                    together[i][0][epoch][key], value, atol=1e-4, rtol=1e-3, msg=f"model {i} {key}"
                )
        assert np.allclose(history.loss_d, together[i][1].loss_d, atol=1e-4)
    with pytest.raises(ValueError, match="only in gf and df"):
        train_gans(
            data,
            [base, replace(base, lr=1e-3)],
            Checkpointer(tmp_path / "bad"),
            torch.device("cpu"),
        )


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    [(reference, _)], _ = _tiny_run(tmp_path, "reference")
    data = [x for x in _blobs(40, 5, size=8)]
    other = GanConfig(
        gf=4, df=4, image_size=8, batch_size=8, lr=1e-3, beta1=0.5, snapshot_epochs=(1, 3), seed=7
    )
    train_gans(data, [other], Checkpointer(tmp_path / "shared"), torch.device("cpu"))
    cfg = GanConfig(
        gf=4, df=4, image_size=8, batch_size=8, lr=2e-4, beta1=0.5, snapshot_epochs=(1, 3), seed=7
    )
    ((fresh, _),) = train_gans(data, [cfg], Checkpointer(tmp_path / "shared"), torch.device("cpu"))
    assert all(torch.equal(v, fresh[3][k]) for k, v in reference[3].items())


def test_model_selection_ranks_and_correlates(repo_root: Path) -> None:
    """Statistics that fall as coverage rises must rank the same models best
    and correlate with quality."""
    import yaml

    from oquab_repro.params import GAN_DATASETS
    from oquab_repro.pipelines.gan import nodes

    gan = yaml.safe_load((repo_root / "params.yaml").read_text())["gan"]
    gan["mini"]["widths"] = {
        "small": 4,
        "medium": 4,
        "large": 4,
    }  # tiny generators: the figure samples from them
    epochs = gan["mini"]["snapshot_epochs"]
    rng, ranked, samples = np.random.default_rng(0), [], []
    state = Generator(4, gan["mini"]["image_size"]).state_dict()
    for ds in GAN_DATASETS:
        tables = []
        for g, d in nodes.grid_cells():
            q = rng.uniform(size=len(epochs))
            tables.append(pd.DataFrame(
            {"dataset": ds, "g": g, "d": d, "gf": 4, "df": 4, "epoch": epochs,
             "mmd": 1 - q, "knn": 1 - q / 2, "nn": 1 - q / 3, "pixel": 1.0, "coverage": q}
            ))  # fmt: skip
        ranked.append(nodes.rank_models(pd.concat(tables, ignore_index=True)))
        snapshots = {
            nodes.cell_name(g, d): dict.fromkeys(epochs, state) for g, d in nodes.grid_cells()
        }
        samples.append(nodes.best_and_worst(ranked[-1], snapshots, gan, "mini", 0))
    lfw, lsun = (nodes.table_c(t) for t in ranked)
    ranking, metrics, _ = nodes.summarise_grids(*ranked)
    assert list(lfw.columns[:6]) == ["gf", "df", "epoch", "mmd", "knn", "nn"] and len(lfw) == len(
        lsun
    ) == 9 * len(epochs)
    assert (
        len(samples[0]["panels"]) == 2 * len(nodes.STATISTICS)
        and samples[1]["dataset"] == "lsun_bedroom"
    )
    nodes.best_worst_figure(*samples)
    for ds in GAN_DATASETS:
        rho = metrics["spearman"][ds]
        assert rho["mmd_vs_knn"] == pytest.approx(1.0) and rho["knn_vs_coverage"] == pytest.approx(
            1.0
        )
        assert rho["knn_vs_pixel"] is None  # a constant statistic ranks nothing
        t = ranking[ranking.dataset == ds]
        assert (t.rank_knn == t.rank_coverage).all()
        first = t.iloc[0]
        cell = metrics["table"][ds][f"{first.g}_{first.d}"][
            f"epoch_{first.epoch}"
        ]  # what the report reads
        assert cell == {"mmd": first.mmd, "knn": first.knn, "nn": first.nn, "pixel": 1.0}


def test_gan_images_honour_skip_corrupt_without_counting_a_neighbour_twice(
    tmp_path: Path, repo_root: Path
) -> None:
    from PIL import Image

    from oquab_repro.lib.datasets import skip_summary
    from oquab_repro.params import GanParams, read_params_file, with_profile
    from oquab_repro.pipelines.gan.nodes import _readable, split_images

    folder = tmp_path / "lfw" / "person"
    folder.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(folder / f"{i}.jpg")
    (folder / "3.jpg").write_bytes((folder / "3.jpg").read_bytes()[:40])  # truncated
    raw = read_params_file(repo_root / "params.yaml")["gan"]
    _, p = with_profile(GanParams, raw, "mini")
    p = p.model_copy(update={"eval_samples": 3, "batch_size": 1, "train_images": None})
    train, held = split_images(tmp_path, "lfw", p, 0, skip_corrupt=True)
    images = _readable(train) + _readable(held)
    assert len(images) == 7  # the bad one left out, its neighbour not read in its place
    assert skip_summary(train.dataset) == {"skipped_images": 1, "skipped_first": ["3.jpg"]}


@pytest.mark.parametrize(("preload", "workers"), [(True, 0), (False, 0), (False, 2)])
def test_gan_training_set_leaves_out_and_records_unreadable_images(
    tmp_path: Path, repo_root: Path, preload: bool, workers: int
) -> None:
    """Preloaded or streamed (DataLoader workers), an unreadable training image is left out, its
    neighbour is not trained on twice, and train_grid hands the file to the metrics."""
    from PIL import Image

    from oquab_repro.lib.datasets import skipped_files
    from oquab_repro.params import GanParams, read_params_file, with_profile
    from oquab_repro.pipelines.gan.nodes import _training_set, split_images

    folder = tmp_path / "lfw" / "person"
    folder.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(folder / f"{i}.jpg")
    raw = read_params_file(repo_root / "params.yaml")["gan"]
    _, p = with_profile(GanParams, raw, "mini")
    p = p.model_copy(update={"eval_samples": 3, "batch_size": 1, "train_images": None})
    train, _ = split_images(tmp_path, "lfw", p, 0, skip_corrupt=True)
    bad = Path(train.dataset.base._path(train.indices[1]))
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    images = _training_set(train, preload, workers, "test")
    assert len(images) == len(train) - 1
    if not preload:
        assert train.indices[1] not in images.indices
    assert skipped_files(train.dataset) == [str(bad)]
