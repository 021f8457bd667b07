"""``oquab-repro``: validate parameters, list stages, and run a stage outside DVC.

The everyday entry point is ``dvc repro`` (incremental, cached); this CLI is for checking
``params.yaml`` and for running a Kedro stage directly while developing it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from oquab_repro.params import ParamsError, read_params_file

ROOT_HELP = """Reproduce M. Oquab's thesis (2018) end to end.

Everyday use:
  dvc repro                     rebuild every stale stage (incremental, cached)
  dvc exp run -S KEY=VALUE      try a parameter change as a DVC experiment
  oquab-repro compare workspace EXP   thesis tables of two experiments side by side
  oquab-repro seeds run && oquab-repro seeds collect   spread over seeds (per_seed.csv)
  oquab-repro push              share finished stages: other machines `dvc repro --pull`
  dvc metrics show / dvc plots show, mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


def _find_root(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise SystemExit(
        f"error: no params.yaml and dvc.yaml in {start} or its parents; run inside the repository."
    )


def cmd_check(args: argparse.Namespace) -> int:
    """Validate params.yaml (and the profile's inputs); with ``--marker``, the DVC stage
    ``check``."""
    from oquab_repro.check import check_project, write_marker

    root = _find_root(Path.cwd())
    try:
        params = check_project(root, inputs=not args.params_only)
    except ParamsError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        if args.marker:
            print("check: stopped before any stage ran; every output is as it was", file=sys.stderr)
        return 2
    if args.marker:
        write_marker(root, args.marker)
    path = root / "params.yaml"
    print(f"{path}: valid (profile={params.profile}, seed={params.seed}, device={params.device})")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """Every DVC stage as DVC resolves dvc.yaml (``foreach`` families expanded)."""
    from dvc.repo import Repo

    with Repo(str(_find_root(Path.cwd()))) as repo:
        if args.waves:
            from oquab_repro.sharing import waves

            for i, names in enumerate(waves(repo.index.graph)):
                print(f"round {i}: {' '.join(names)}")
            return 0
        for stage in repo.index.stages:
            params = [d for d in stage.deps if d.__class__.__name__ == "ParamsDependency"]
            keys = ", ".join(k for d in params for k in d.params or [f"{d.def_path} (every key)"])
            print(f"{stage.name:<22} {stage.cmd:<48} params: {keys}")
    return 0


def cmd_dvc_yaml(args: argparse.Namespace) -> int:
    from oquab_repro.dvc_yaml import command

    return command(_find_root(Path.cwd()), check=args.check)


def cmd_run(args: argparse.Namespace) -> int:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = _find_root(Path.cwd())
    bootstrap_project(root)
    from kedro.framework.project import pipelines

    known = sorted(p for p in pipelines if p != "__default__")
    unknown = [s for s in args.stages if s not in known]
    if unknown:
        print(
            f"error: no stage pipeline {', '.join(map(repr, unknown))}; available: "
            f"{', '.join(known)} (DVC stage names such as pretrain@in1000c go to `dvc repro`; "
            "`oquab-repro stages` lists them)",
            file=sys.stderr,
        )
        return 2
    with KedroSession.create(project_path=root) as session:
        session.run(pipeline_names=args.stages or None)
    return 0


def _experiments(root: Path) -> list[dict]:
    """Workspace, baseline commit and DVC experiments as ``dvc exp show
    --json`` lists them (flattened)."""
    proc = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: `dvc exp show --json` failed: {proc.stderr.strip()}")
    rows, todo = [], json.loads(proc.stdout)
    while todo:
        row = todo.pop(0)
        rows.append(row)
        for exp in row.get("experiments") or []:
            todo.extend(exp.get("revs") or [])
    return rows


def _stage_metrics(row: dict) -> dict[str, dict]:
    """``{stage: metrics}`` of one experiment row, keyed by
    data/08_reporting/<stage>/metrics.json."""
    out = {}
    for path, content in ((row.get("data") or {}).get("metrics") or {}).items():
        parts = Path(path).parts
        if len(parts) >= 2 and parts[-1] == "metrics.json" and "data" in content:
            out[parts[-2]] = content["data"]
    return out


def _pick(rows: list[dict], wanted: str, root: Path) -> dict:
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", f"{wanted}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for row in rows:
        if sha and row.get("rev") == sha:
            return row
        if wanted in {row.get("name"), row.get("rev")} or (
            len(wanted) >= 7 and str(row.get("rev", "")).startswith(wanted)
        ):
            return row
    names = ", ".join(str(r.get("name") or r.get("rev"))[:20] for r in rows)
    raise SystemExit(
        f"error: no experiment or revision '{wanted}' in `dvc exp show`; known: {names}"
    )


def _dvc_metrics(root: Path, names: list[str]) -> dict[str, dict[str, dict]]:
    """``{name: {stage: metrics}}`` of experiments or revisions in ``dvc exp show``."""
    rows = _experiments(root)
    return {name: _stage_metrics(_pick(rows, name, root)) for name in names}


def _mlflow_metrics(root: Path, names: list[str]) -> dict[str, dict[str, dict]]:
    """``{name: {stage: metrics}}`` of MLflow runs (run ids or ``dvc_exp`` tags) in the store of
    conf/base/mlflow.yml or MLFLOW_TRACKING_URI: runs of every machine logging to one server."""
    import tempfile

    from oquab_repro.tracking import resolve_tracking_uri, stage_metrics_of_runs

    config = yaml.safe_load((root / "conf/base/mlflow.yml").read_text())
    uri = resolve_tracking_uri(config["tracking_uri"], root)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return {
                name: stage_metrics_of_runs(
                    uri, config["experiment_name"], name, Path(tmp) / str(i)
                )
                for i, name in enumerate(names)
            }
        except LookupError as exc:
            raise SystemExit(f"error: {exc}") from exc


SOURCES = {"dvc": _dvc_metrics, "mlflow": _mlflow_metrics}
"""Where ``compare`` finds an experiment's stage metrics."""


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from oquab_repro.pipelines.report.nodes import compare_with_thesis
    from oquab_repro.tracking import flatten

    root = _find_root(Path.cwd())
    reference = yaml.safe_load((root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    picked = SOURCES[args.source](root, [args.a, args.b])
    tables = [
        compare_with_thesis(reference, "-", **metrics).rename(columns={"ours": name})
        for name, metrics in picked.items()
    ]
    keys = ["table", "row", "column", "thesis"]
    merged = tables[0][keys + [args.a]].merge(tables[1][keys + [args.b]], on=keys)
    if args.table:
        merged = merged[merged.table.isin(args.table)]
    pd.set_option("display.width", 200)
    print(f"Thesis tables: thesis vs {args.a} vs {args.b}\n")
    print(merged.to_string(index=False, na_rep="-"))
    flat = {name: flatten(metrics) for name, metrics in picked.items()}
    changed = sorted(
        k
        for k in flat[args.a].keys() | flat[args.b].keys()
        if flat[args.a].get(k) != flat[args.b].get(k)
    )
    print(f"\nMetrics that differ ({len(changed)}):")
    for key in changed:
        print(f"  {key:<60} {flat[args.a].get(key)!s:>14} {flat[args.b].get(key)!s:>14}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from oquab_repro.sharing import push

    done = push(_find_root(Path.cwd()), remote=args.remote, jobs=args.jobs)
    print(
        f"dvc push --run-cache: {done.workspace} files and run entries; outputs of the "
        f"{done.entries} run-cache entries: {done.run_outputs} pushed"
        + (
            f", {done.missing} not in the local cache (pushed by another machine?)"
            if done.missing
            else ""
        )
    )
    print(
        "Other machines: `git pull && dvc repro --pull` restores these stages instead of "
        "running them."
    )
    return 0


def cmd_mirror_build(args: argparse.Namespace) -> int:
    import logging
    from dataclasses import fields

    from oquab_repro.lib import mirror

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        counts = mirror.MirrorCounts(
            **{f.name: getattr(args, f.name) for f in fields(mirror.MirrorCounts)}
        )
        summary = mirror.build_mirror(Path(args.dir), counts)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary['root']}: {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB in"
        f" {summary['seconds']} s; checksums in {summary['manifest']}"
    )
    for top, size in sorted(mirror.sizes(Path(args.dir)).items()):
        print(f"  {top:<28} {size / 1e6:8.1f} MB")
    url = f"http://127.0.0.1:{args.port}"
    sets = " ".join(
        f"-S data.full.{k}={v}" for k, v in mirror.params_for(Path(args.dir), url).items()
    )
    print(
        "\nRehearse the full profile's data stage against it:\n  oquab-repro mirror serve"
        f" {args.dir} --port {args.port} &\n  dvc exp run -S profile=full {sets} data"
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_mirror_serve(args: argparse.Namespace) -> int:
    from oquab_repro.lib import mirror

    root = Path(args.dir)
    if not (root / mirror.MANIFEST).is_file():
        print(
            f"error: {root}: no {mirror.MANIFEST}; build a mirror there first (oquab-repro mirror"
            f" build {root}).",
            file=sys.stderr,
        )
        return 2
    server = mirror.make_server(root, args.bind, args.port)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with `&` from a script, which
        signal.signal(sig, _interrupt)  # leaves SIGINT ignored: Ctrl-C or kill stop it cleanly
    print(
        f"Serving {root} at http://{args.bind}:{server.server_address[1]} (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_mirror_check(args: argparse.Namespace) -> int:
    from oquab_repro.lib import mirror

    bad = mirror.check_manifest(Path(args.dir))
    for rel in bad:
        print(f"{args.dir}/{rel}: does not match {mirror.MANIFEST}", file=sys.stderr)
    print(f"{args.dir}: {'intact' if not bad else f'{len(bad)} file(s) differ from the manifest'}")
    return 1 if bad else 0


def _add_mirror(sub: argparse._SubParsersAction) -> None:
    from dataclasses import fields

    from oquab_repro.lib.mirror_counts import MirrorCounts

    mirror = sub.add_parser(
        "mirror",
        help=(
            "build / serve / check a rehearsal mirror of every full-profile input (official"
            " layouts, few images)"
        ),
        description=(
            "A local stand-in for the official hosts: small archives in each official layout plus"
            " ImageNet, WordNet and a SHA256SUMS manifest, served over HTTP on 127.0.0.1 so"
            " `profile: full` can be rehearsed offline."
        ),
    )
    actions = mirror.add_subparsers(dest="mirror_command", required=True)
    build = actions.add_parser(
        "build", help="write the mirror into DIR (empty or new); counts are per archive"
    )
    build.add_argument("dir", help="output folder, e.g. /tmp/oquab-mirror")
    for f in fields(MirrorCounts):
        build.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=int,
            default=f.default,
            help=f"{f.metadata['help']} (default {f.default})",
        )
    build.add_argument(
        "--port", type=int, default=8765, help="port the printed commands use (default 8765)"
    )
    build.set_defaults(func=cmd_mirror_build)
    serve = actions.add_parser(
        "serve", help="serve DIR over HTTP with Range support (resumable downloads)"
    )
    serve.add_argument("dir", help="a mirror folder written by `mirror build`")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    serve.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.set_defaults(func=cmd_mirror_serve)
    check = actions.add_parser("check", help="verify every file of DIR against its SHA256SUMS")
    check.add_argument(
        "dir", help="a mirror folder (holds SHA256SUMS, as `mirror build` writes it)"
    )
    check.set_defaults(func=cmd_mirror_check)


# ---- seeds: the spread of every metric over seeds, as DVC experiments -------------------------
# `seeds run` makes one DVC experiment per seed (`dvc exp run -S seed=K`, named seed-K); `seeds
# collect` reads them back from `dvc exp show --json` into data/08_reporting/seeds/per_seed.csv,
# which the report stage depends on (mean ± sd per number, verdicts over seeds).

SEEDS_CSV = Path("data/08_reporting/seeds/per_seed.csv")
NOT_RESULTS = re.compile(
    r"seconds|_per_s\b"
)  # wall times vary with the machine's load, not the seed


def seed_targets(root: Path, stages: list[str] | None) -> list[str]:
    """DVC targets of a sweep: the given stages, else every stage but the report (which reads the
    sweep's output, so running it per seed would be circular)."""
    declared = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    if not stages:
        return [s for s in declared if s != "report"]
    unknown = sorted({s.split("@")[0] for s in stages} - set(declared))
    if unknown:
        raise SystemExit(f"error: no stage {unknown} in dvc.yaml; stages: {', '.join(declared)}")
    return stages


def _dvc(argv: list[str], root: Path) -> int:
    print("$ " + " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=root).returncode


def _baseline_experiments(shown: list[dict]) -> list[dict]:
    """The experiment revisions of the commit the workspace is on (``dvc exp show``'s second row;
    the first is the workspace itself)."""
    baseline = next((row for row in shown if row.get("rev") != "workspace"), None)
    if baseline is None:
        return []
    return [rev for exp in baseline.get("experiments") or [] for rev in exp.get("revs") or []]


def _head(root: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()


def cmd_seeds_run(args: argparse.Namespace) -> int:
    root = _find_root(Path.cwd())
    targets = seed_targets(root, args.stages)
    existing = {rev.get("name") for rev in _baseline_experiments(_exp_show(root))}
    head, walls = _head(root), {}
    print(
        f"Seeds {args.seeds} on commit {head[:12]}: do not commit until the sweep ends (DVC files"
        " experiments under their commit)."
    )
    for seed in args.seeds:
        name = f"{args.prefix}{seed}"
        if _head(root) != head:
            print(
                f"error: HEAD moved from {head[:12]} to {_head(root)[:12]} during the sweep; seeds"
                " of one sweep must share a commit. Rerun the missing seeds: oquab-repro seeds run"
                f" --seeds {' '.join(map(str, args.seeds[args.seeds.index(seed) :]))}",
                file=sys.stderr,
            )
            return 1
        if name in existing and _dvc(["dvc", "exp", "remove", name], root) != 0:
            return 1  # an earlier seed-K of this commit: replaced, as DVC refuses duplicate names
        mode = ["--queue"] if args.queue else ["--temp"]
        tic = time.perf_counter()
        code = _dvc(
            ["dvc", "exp", "run", *mode, "--name", name, "--set-param", f"seed={seed}", *targets],
            root,
        )
        walls[seed] = time.perf_counter() - tic
        if code != 0:
            print(
                f"error: seed {seed} failed (exit {code}); earlier seeds are kept as experiments",
                file=sys.stderr,
            )
            return code
    if args.queue:
        print(
            f"Queued {len(args.seeds)} seeds: `dvc queue start -j N`, wait for `dvc queue status`,"
            " then `oquab-repro seeds collect`."
        )
    else:
        print(
            "Wall time per seed: "
            + ", ".join(f"seed {s}: {w / 60:.1f} min" for s, w in walls.items())
        )
        print("Next: `oquab-repro seeds collect` writes " + str(SEEDS_CSV))
    return 0


def _exp_show(root: Path) -> list[dict]:
    proc = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: `dvc exp show --json` failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _params(rev: dict) -> dict:
    return ((rev.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data") or {}


def seed_replicates(shown: list[dict], params: dict, seeds: list[int] | None) -> dict[int, dict]:
    """seed → newest experiment of this commit whose params equal ``params`` in everything but
    ``seed`` (other experiments changed something else: they are not replicates of this setup)."""
    from oquab_repro.tracking import flatten

    want = {k: v for k, v in flatten(params).items() if k != "seed"}
    picked: dict[int, dict] = {}
    for rev in _baseline_experiments(shown):
        data = rev.get("data") or {}
        if rev.get("error") or not data.get("metrics") or "seed" not in _params(rev):
            continue  # failed, queued or running
        got = flatten(_params(rev))
        seed = got.pop("seed")
        if got != want or (seeds and seed not in seeds):
            continue
        if seed not in picked or (data.get("timestamp") or "") > (
            picked[seed]["data"].get("timestamp") or ""
        ):
            picked[seed] = rev
    return dict(sorted(picked.items()))


def seeded_metrics(lock: dict, seed: int) -> set[str]:
    """Metrics files an experiment's ``dvc.lock`` shows were produced under ``seed``: by a stage
    that ran with ``seed`` = ``seed`` (when it reads it) from the outputs its
    upstream stages hold now.

    An experiment limited to some stages (``seeds run --stages``) still carries every other
    stage's metrics file, as the commit had it; those numbers belong to
    another seed and are left out.
    """
    stages = lock.get("stages", {})
    producer = {
        out["path"]: (name, out.get("md5"))
        for name, entry in stages.items()
        for out in entry.get("outs", [])
    }
    memo: dict[str, bool] = {}

    def fresh(name: str) -> bool:
        if name not in memo:
            memo[name] = (
                False  # a cycle cannot occur in a DVC graph; this only guards the recursion
            )
            entry = stages[name]
            own = (entry.get("params") or {}).get("params.yaml", {}).get("seed", seed) == seed
            upstream = [
                (producer[d["path"]], d.get("md5"))
                for d in entry.get("deps", [])
                if d["path"] in producer
            ]
            memo[name] = own and all(
                md5 == out_md5 and fresh(up) for (up, out_md5), md5 in upstream
            )
        return memo[name]

    return {
        path
        for path, (name, _) in producer.items()
        if path.endswith("metrics.json") and fresh(name)
    }


def _lock_at(root: Path, rev: str) -> dict:
    proc = subprocess.run(
        ["git", "show", f"{rev}:dvc.lock"], cwd=root, capture_output=True, text=True
    )
    return yaml.safe_load(proc.stdout) or {} if proc.returncode == 0 else {}


def per_seed_rows(
    replicates: dict[int, dict], commit: str, locks: dict[int, dict] | None = None
) -> list[dict]:
    """One row per (seed, stage, metric key): every numeric leaf of every
    data/08_reporting/<stage>/metrics.json produced under that seed (see :func:`seeded_metrics`;
    all of them without ``locks``), wall times left out; ``experiment`` and ``commit`` say where
    each number comes from."""
    from oquab_repro.tracking import numeric_items

    rows = []
    for seed, rev in replicates.items():
        source = {"experiment": rev.get("name") or rev.get("rev"), "commit": commit}
        valid = seeded_metrics(locks[seed], seed) if locks is not None else None
        for stage, metrics in _stage_metrics(rev).items():
            if valid is not None and f"data/08_reporting/{stage}/metrics.json" not in valid:
                continue
            rows += [
                {"seed": seed, "stage": stage, "key": key, "value": value, **source}
                for key, value in numeric_items(metrics).items()
                if not NOT_RESULTS.search(key)
            ]
    return rows


def cmd_seeds_collect(args: argparse.Namespace) -> int:
    import pandas as pd

    root = _find_root(Path.cwd())
    params = read_params_file(root / "params.yaml")
    shown = _exp_show(root)
    replicates = seed_replicates(shown, params, args.seeds)
    if not replicates:
        raise SystemExit(
            "error: no seed experiment of this commit has the workspace's params; run `oquab-repro"
            " seeds run` first."
        )
    if args.seeds and (missing := sorted(set(args.seeds) - set(replicates))):
        raise SystemExit(
            f"error: no finished experiment for seed(s) {missing} with the workspace's params; run"
            " them with `oquab-repro seeds run --seeds ...`."
        )
    commit = next((row.get("rev") for row in shown if row.get("rev") != "workspace"), "")
    locks = {seed: _lock_at(root, rev["rev"]) for seed, rev in replicates.items()}
    table = pd.DataFrame(per_seed_rows(replicates, commit, locks)).sort_values(
        ["stage", "key", "seed"], kind="stable"
    )
    out = root / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    names = ", ".join(
        f"{s}: {r.get('name') or r.get('rev', '')[:7]}" for s, r in replicates.items()
    )
    print(f"{args.out}: {len(table)} rows, {len(replicates)} seeds ({names})")
    if len(replicates) < 3:
        print("note: the report states a claim as holding only with 3 seeds or more")
    return 0


def _add_seeds(sub: argparse._SubParsersAction) -> None:
    seeds = sub.add_parser(
        "seeds",
        help=(
            "spread over seeds: run the pipeline once per seed as DVC experiments, collect the"
            " metrics"
        ),
        description=(
            "`seeds run` runs `dvc exp run --temp -S seed=K --name seed-K` per seed (every stage"
            " but the report, or --stages), each in a temporary copy, so the workspace is"
            " untouched; run-cache hits are reused. `seeds collect` reads the finished ones from"
            f" `dvc exp show --json` and writes {SEEDS_CSV} (seed, stage, key, value), which the"
            " report stage depends on: `oquab-repro seeds run && oquab-repro seeds collect && dvc"
            " repro report`."
        ),
    )
    verbs = seeds.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="one DVC experiment per seed")
    run.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)"
    )
    run.add_argument(
        "--stages", nargs="+", help="DVC stages to run per seed (default: every stage but report)"
    )
    run.add_argument(
        "--queue",
        action="store_true",
        help="only queue the experiments (then `dvc queue start -j N`)",
    )
    run.add_argument("--prefix", default="seed-", help="experiment name prefix (default: seed-)")
    run.set_defaults(func=cmd_seeds_run)
    collect = verbs.add_parser(
        "collect", help=f"write {SEEDS_CSV} from the seed experiments of this commit"
    )
    collect.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="require exactly these seeds (default: every seed found)",
    )
    collect.add_argument(
        "--out", type=Path, default=SEEDS_CSV, help=f"output CSV (default: {SEEDS_CSV})"
    )
    collect.set_defaults(func=cmd_seeds_collect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oquab-repro",
        description=ROOT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check",
        help="validate params.yaml (every key) and the profile's inputs; name any bad key and "
        "the fix",
        description="Exit 2 with one line per problem (key, value, rule) when params.yaml is "
        "invalid or the profile's data cannot be had. The DVC stage `check`, upstream of every "
        "stage, runs this "
        "before DVC removes any output.",
    )
    check.add_argument(
        "--marker", help="also write this fixed file when valid (the DVC stage's output)"
    )
    check.add_argument(
        "--params-only",
        action="store_true",
        help="skip the profile's input checks (paths, archives' hosts)",
    )
    check.set_defaults(func=cmd_check)
    stages = sub.add_parser(
        "stages", help="list the DVC stages, their commands and the params they track"
    )
    stages.add_argument(
        "--waves",
        action="store_true",
        help="print the stages in rounds that depend only on earlier rounds: the stages of one "
        "round can run on separate machines at once (README: Scaling out)",
    )
    stages.set_defaults(func=cmd_stages)
    dvc_yaml = sub.add_parser(
        "dvc-yaml",
        help="regenerate dvc.yaml from the pipelines, the catalog and params.yaml (after adding a "
        "variant, dataset or stage)",
    )
    dvc_yaml.add_argument(
        "--check", action="store_true", help="only say whether dvc.yaml is current"
    )
    dvc_yaml.set_defaults(func=cmd_dvc_yaml)
    run = sub.add_parser(
        "run", help="run Kedro stage pipelines directly (no DVC caching); default: every stage"
    )
    run.add_argument("stages", nargs="*", help="stage names, e.g. distances twosample")
    run.set_defaults(func=cmd_run)
    compare = sub.add_parser(
        "compare",
        help="print two experiments' thesis tables side by side, then every metric that differs",
        description="A and B are names or revisions from `dvc exp show`: workspace, a commit, or "
        "an experiment name; with --from mlflow, MLflow run ids or dvc_exp tags of runs logged "
        "from any "
        "machine to the tracking store.",
    )
    compare.add_argument("a", help="first experiment or revision, e.g. workspace")
    compare.add_argument(
        "b", help="second experiment or revision, e.g. an experiment name from `dvc exp show`"
    )
    compare.add_argument(
        "--table", action="append", help="only this thesis table id (repeatable), e.g. 5.1"
    )
    compare.add_argument(
        "--from",
        dest="source",
        choices=sorted(SOURCES),
        default="dvc",
        help="dvc: experiments of this repository (dvc exp show); mlflow: runs in the tracking "
        "store (MLFLOW_TRACKING_URI, e.g. a shared server), A and B being run ids or dvc_exp tags",
    )
    compare.set_defaults(func=cmd_compare)
    push = sub.add_parser(
        "push",
        help="share finished stages with other machines: dvc push --run-cache, plus every output "
        "the run-cache names (metrics included), so `dvc repro --pull` elsewhere restores them",
    )
    push.add_argument("-r", "--remote", help="DVC remote (default: core.remote in .dvc/config)")
    push.add_argument("-j", "--jobs", type=int, help="parallel transfers (DVC's default if unset)")
    push.set_defaults(func=cmd_push)
    _add_mirror(sub)
    _add_seeds(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `oquab-repro stages | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # as Python's docs advise
        return 0


if __name__ == "__main__":
    sys.exit(main())
