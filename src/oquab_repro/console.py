"""``oquab-repro``: validate parameters, list stages, and run a stage outside DVC.

The everyday entry point is ``dvc repro`` (incremental, cached); this CLI is for checking
``params.yaml`` and for running a Kedro stage directly while developing it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from oquab_repro.params import ParamsError, read_params_file, validate_params

ROOT_HELP = """Reproduce M. Oquab's thesis (2018) end to end.

Everyday use:
  dvc repro                     rebuild every stale stage (incremental, cached)
  dvc exp run -S KEY=VALUE      try a parameter change as a DVC experiment
  oquab-repro compare workspace EXP   thesis tables of two experiments side by side
  dvc metrics show / dvc plots show, mlflow ui --backend-store-uri sqlite:///mlflow.db
"""


def _find_root(start: Path) -> Path:
    for folder in [start, *start.parents]:
        if (folder / "params.yaml").is_file() and (folder / "dvc.yaml").is_file():
            return folder
    raise SystemExit(f"error: no params.yaml and dvc.yaml in {start} or its parents; run inside the repository.")


def cmd_check(args: argparse.Namespace) -> int:
    path = _find_root(Path.cwd()) / "params.yaml"
    try:
        params = validate_params(read_params_file(path), path)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: valid (profile={params.profile}, seed={params.seed}, device={params.device})")
    return 0


def cmd_stages(args: argparse.Namespace) -> int:
    """Every DVC stage as DVC resolves dvc.yaml (``foreach`` families expanded)."""
    from dvc.repo import Repo

    with Repo(str(_find_root(Path.cwd()))) as repo:
        for stage in repo.index.stages:
            params = [d for d in stage.deps if d.__class__.__name__ == "ParamsDependency"]
            keys = ", ".join(k for d in params for k in d.params)
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
    with KedroSession.create(project_path=root) as session:
        session.run(pipeline_names=args.stages or None)
    return 0


def _experiments(root: Path) -> list[dict]:
    """Workspace, baseline commit and DVC experiments as ``dvc exp show --json`` lists them (flattened)."""
    proc = subprocess.run(["dvc", "exp", "show", "--json"], cwd=root, capture_output=True, text=True)
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
    """``{stage: metrics}`` of one experiment row, keyed by data/08_reporting/<stage>/metrics.json."""
    out = {}
    for path, content in ((row.get("data") or {}).get("metrics") or {}).items():
        parts = Path(path).parts
        if len(parts) >= 2 and parts[-1] == "metrics.json" and "data" in content:
            out[parts[-2]] = content["data"]
    return out


def _pick(rows: list[dict], wanted: str, root: Path) -> dict:
    sha = subprocess.run(["git", "rev-parse", "--verify", "-q", f"{wanted}^{{commit}}"], cwd=root,
                         capture_output=True, text=True).stdout.strip()
    for row in rows:
        if sha and row.get("rev") == sha:
            return row
        if wanted in {row.get("name"), row.get("rev")} or (len(wanted) >= 7 and str(row.get("rev", "")).startswith(wanted)):
            return row
    names = ", ".join(str(r.get("name") or r.get("rev"))[:20] for r in rows)
    raise SystemExit(f"error: no experiment or revision '{wanted}' in `dvc exp show`; known: {names}")


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from oquab_repro.pipelines.report.nodes import compare_with_thesis
    from oquab_repro.tracking import flatten

    root = _find_root(Path.cwd())
    reference = yaml.safe_load((root / "src/oquab_repro/reference/thesis_numbers.yaml").read_text())
    rows = _experiments(root)
    picked = {name: _stage_metrics(_pick(rows, name, root)) for name in (args.a, args.b)}
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
    changed = sorted(k for k in flat[args.a].keys() | flat[args.b].keys() if flat[args.a].get(k) != flat[args.b].get(k))
    print(f"\nMetrics that differ ({len(changed)}):")
    for key in changed:
        print(f"  {key:<60} {flat[args.a].get(key)!s:>14} {flat[args.b].get(key)!s:>14}")
    return 0


def cmd_mirror_build(args: argparse.Namespace) -> int:
    import logging
    from dataclasses import fields

    from oquab_repro.lib import mirror

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        counts = mirror.MirrorCounts(**{f.name: getattr(args, f.name) for f in fields(mirror.MirrorCounts)})
        summary = mirror.build_mirror(Path(args.dir), counts)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary['root']}: {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB in {summary['seconds']} s; "
          f"checksums in {summary['manifest']}")  # fmt: skip
    for top, size in sorted(mirror.sizes(Path(args.dir)).items()):
        print(f"  {top:<28} {size / 1e6:8.1f} MB")
    url = f"http://127.0.0.1:{args.port}"
    sets = " ".join(f"-S data.full.{k}={v}" for k, v in mirror.params_for(Path(args.dir), url).items())
    print(f"\nRehearse the full profile's data stage against it:\n  oquab-repro mirror serve {args.dir} --port {args.port} &\n"
          f"  dvc exp run -S profile=full {sets} data")  # fmt: skip
    return 0


def cmd_mirror_serve(args: argparse.Namespace) -> int:
    from oquab_repro.lib import mirror

    root = Path(args.dir)
    if not (root / mirror.MANIFEST).is_file():
        print(f"error: {root}: no {mirror.MANIFEST}; build a mirror there first (oquab-repro mirror build {root}).", file=sys.stderr)
        return 2
    server = mirror.make_server(root, args.bind, args.port)
    print(f"Serving {root} at http://{args.bind}:{server.server_address[1]} (Ctrl-C stops)", flush=True)
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
        help="build / serve / check a rehearsal mirror of every full-profile input (official layouts, few images)",
        description="A local stand-in for the official hosts: small archives in each official layout plus ImageNet, "
        "WordNet and a SHA256SUMS manifest, served over HTTP on 127.0.0.1 so `profile: full` can be rehearsed offline.",
    )
    actions = mirror.add_subparsers(dest="mirror_command", required=True)
    build = actions.add_parser("build", help="write the mirror into DIR (empty or new); counts are per archive")
    build.add_argument("dir", help="output folder, e.g. /tmp/oquab-mirror")
    for f in fields(MirrorCounts):
        build.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=int, default=f.default, help=f"{f.metadata['help']} (default {f.default})")
    build.add_argument("--port", type=int, default=8765, help="port the printed commands use (default 8765)")
    build.set_defaults(func=cmd_mirror_build)
    serve = actions.add_parser("serve", help="serve DIR over HTTP with Range support (resumable downloads)")
    serve.add_argument("dir")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.set_defaults(func=cmd_mirror_serve)
    check = actions.add_parser("check", help="verify every file of DIR against its SHA256SUMS")
    check.add_argument("dir")
    check.set_defaults(func=cmd_mirror_check)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oquab-repro", description=ROOT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate params.yaml and name any bad key").set_defaults(func=cmd_check)
    sub.add_parser("stages", help="list the DVC stages, their commands and the params they track").set_defaults(
        func=cmd_stages
    )
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
        description="A and B are names or revisions from `dvc exp show`: workspace, a commit, or an experiment name.",
    )
    compare.add_argument("a", help="first experiment or revision, e.g. workspace")
    compare.add_argument("b", help="second experiment or revision, e.g. an experiment name from `dvc exp show`")
    compare.add_argument("--table", action="append", help="only this thesis table id (repeatable), e.g. 5.1")
    compare.set_defaults(func=cmd_compare)
    _add_mirror(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
