"""DCGAN grid at mini scale: cost of a training step, whether training the grid's models together
pays (grouped convolutions as lib.adversarial.train_gans does, and torch.func vmap), and what
evaluating one snapshot costs.

Run from the repository root: ``PYTHONPATH=src python benchmarks/bench_gan.py`` (``--quick`` for
fewer repetitions). Numbers are medians; the CPU is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import (
    functional_call,
    grad,
    replace_all_batch_norm_modules_,
    stack_module_state,
    vmap,
)

from oquab_repro.lib import twosample as ts
from oquab_repro.lib.adversarial import GanConfig, discriminator_classifier, sample, train_gans
from oquab_repro.lib.checkpoint import Checkpointer
from oquab_repro.lib.features import build_featuriser, knn_coverage
from oquab_repro.lib.models.dcgan import Discriminator, Generator
from oquab_repro.params import C2STParams, read_params_file, validate_params

ROOT = Path(__file__).resolve().parents[1]


def _median_time(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _train_step(gen, disc, opt_g, opt_d, real):
    """One DCGAN update (discriminator, then generator), as
    lib.adversarial.train_gans does for one model."""
    ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
    fake = gen(torch.randn(len(real), 100))
    loss_d = F.binary_cross_entropy_with_logits(
        disc(real), ones
    ) + F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = F.binary_cross_entropy_with_logits(disc(fake), ones)
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def bench_step(width: int, size: int, batch: int, reps: int) -> float:
    gen, disc = Generator(width, size), Discriminator(width, size)
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, 3, size, size) * 2 - 1
    return _median_time(lambda: _train_step(gen, disc, opt_g, opt_d, real), reps)


def bench_grid(p, lr: float, beta1: float, epochs: int = 2) -> tuple[float, float]:
    """Seconds per grid step (every gf × df model updated once): one train_gans run per model vs one
    run for the whole grid (grouped convolutions). Same images, noise and steps in both."""
    n = 4 * p.batch_size
    images = list(torch.rand(n, 3, p.image_size, p.image_size) * 2 - 1)
    base = GanConfig(1, 1, p.image_size, p.batch_size, lr, beta1, tuple(range(1, epochs + 1)), 0)
    cfgs = [replace(base, gf=g, df=d) for g in p.widths.values() for d in p.widths.values()]
    steps = epochs * (n // p.batch_size)

    def run(group: list[GanConfig]) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            tic = time.perf_counter()
            train_gans(images, group, Checkpointer(Path(tmp)), torch.device("cpu"), desc="bench")
            return time.perf_counter() - tic

    separate = sum(run([c]) for c in cfgs) / steps
    together = run(cfgs) / steps
    return separate, together


def bench_vmap(width: int, size: int, batch: int, models: int, reps: int) -> tuple[float, float]:
    """Gradients of the generator loss for ``models`` same-shape DCGANs: a loop vs one vmap call.

    Batch norm's running statistics cannot be updated under vmap, so both variants use batch
    statistics only (``replace_all_batch_norm_modules_``): a like-for-like compute comparison.
    """
    gens = [replace_all_batch_norm_modules_(Generator(width, size)) for _ in range(models)]
    discs = [replace_all_batch_norm_modules_(Discriminator(width, size)) for _ in range(models)]
    z = torch.randn(models, batch, 100)

    def loop() -> None:
        for g, d, zi in zip(gens, discs, z, strict=True):
            g.zero_grad()
            F.binary_cross_entropy_with_logits(d(g(zi)), torch.ones(batch)).backward()

    g_params, g_buffers = stack_module_state(gens)
    d_params, d_buffers = stack_module_state(discs)
    g_base, d_base = copy.deepcopy(gens[0]).to("meta"), copy.deepcopy(discs[0]).to("meta")

    def loss(gp, gb, dp, db, zi):
        fake = functional_call(g_base, (gp, gb), (zi,))
        return F.binary_cross_entropy_with_logits(
            functional_call(d_base, (dp, db), (fake,)), torch.ones(batch)
        )

    batched = vmap(grad(loss), in_dims=(0, 0, 0, 0, 0))
    return _median_time(loop, reps), _median_time(
        lambda: batched(g_params, g_buffers, d_params, d_buffers, z), reps
    )


def bench_evaluation(cfg, c2st: C2STParams, width: int) -> dict[str, float]:
    """One snapshot's evaluation as the gan stage runs it, timed part by part."""
    p = cfg.mini
    torch.manual_seed(0)
    state = Generator(width, p.image_size).state_dict()
    real = torch.rand(p.eval_samples, 3, p.image_size, p.image_size) * 2 - 1
    f = p.featuriser
    weights = ROOT / f.weights if f.weights else None
    if weights is not None and not weights.is_file():
        raise SystemExit(
            f"{weights}: missing; run `dvc repro pretrain@in1000c` first (the mini featuriser)"
        )
    featurise = build_featuriser(
        f.kind, weights=weights, sha256_prefix=f.sha256_prefix, input_size=f.input_size, seed=0
    )
    real_features = featurise(real)
    parts: dict[str, float] = {}

    def timed(name, fn):
        tic = time.perf_counter()
        out = fn()
        parts[name] = time.perf_counter() - tic
        return out

    fake = timed("sample", lambda: sample(state, width, p.image_size, p.eval_samples, seed=1))
    fake_features = timed("featurise", lambda: featurise(fake))
    options = ts.TestOptions.from_params(c2st.model_dump())
    for name, method in (("c2st_knn", "knn"), ("c2st_nn", "nn"), ("mmd", "mmd")):
        test = partial(ts.two_sample_test, real_features, fake_features, seed=0, options=options)
        timed(name, lambda m=method, t=test: t(method=m))
    px = discriminator_classifier(
        p.pixel_c2st.df, p.pixel_c2st.epochs, p.pixel_c2st.lr, p.pixel_c2st.batch_size
    )
    timed("c2st_pixel", lambda: ts.c2st(real.numpy(), fake.numpy(), px, c2st.test_fraction, 0))
    timed("coverage", lambda: knn_coverage(real_features, fake_features, p.coverage_k))
    parts["total"] = sum(parts.values())
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    params = validate_params(read_params_file(ROOT / "params.yaml"), ROOT / "params.yaml")
    cfg, p = params.gan, params.gan.mini
    torch.set_flush_denormal(True)
    steps_per_epoch = p.train_images // p.batch_size
    print(
        f"mini: {p.image_size}x{p.image_size} images, batch {p.batch_size}, {steps_per_epoch}"
        f" steps/epoch, {max(p.snapshot_epochs)} epochs"
    )
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for level, width in p.widths.items():
            t = bench_step(width, p.image_size, p.batch_size, reps)
            print(
                f"  {threads} thread(s), gf=df={width:3d} ({level:6s}): {1e3 * t:7.1f} ms per"
                " generator step (D + G update)"
            )
        separate, together = bench_grid(p, cfg.optim.lr, cfg.optim.beta1)
        print(
            f"  {threads} thread(s), grid of 9 models: {1e3 * separate:6.1f} ms per step one by"
            f" one, {1e3 * together:6.1f} ms grouped ({separate / together:.2f}x)"
        )
    torch.set_num_threads(p.torch_threads or torch.get_num_threads())
    widths = list(p.widths.values())
    _, together = bench_grid(p, cfg.optim.lr, cfg.optim.beta1)
    train_grid = together * steps_per_epoch * max(p.snapshot_epochs) * 2  # two datasets
    print(
        f"  grid training estimate (2 sets × 9 models, {p.torch_threads or 'default'} thread(s),"
        f" grouped): {train_grid:.0f} s"
    )
    for width in (widths[0], widths[-1]):
        t_loop, t_vmap = bench_vmap(width, p.image_size, p.batch_size, models=3, reps=reps)
        print(
            f"  3 models gf=df={width}: loop {1e3 * t_loop:.1f} ms, vmap {1e3 * t_vmap:.1f} ms per"
            f" gradient ({t_loop / t_vmap:.2f}x)"
        )
    parts = bench_evaluation(cfg, params.c2st, widths[-1])
    print(f"evaluation of one snapshot (n = {p.eval_samples} samples vs {p.eval_samples} real):")
    for name, t in parts.items():
        print(f"  {name:10s}: {t:6.2f} s")
    snapshots = 18 * len(p.snapshot_epochs)
    evaluation = parts["total"] * snapshots
    print(f"  all {snapshots} snapshots: {evaluation:.0f} s")
    total = train_grid + evaluation
    print(
        f"mini grid + evaluation (compute only, no Kedro start-up): {total:.0f} s; target 100 s on"
        f" 2 idle cores ({total / 100:.2f} of target)"
    )


if __name__ == "__main__":
    main()
