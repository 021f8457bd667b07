"""``oquab-repro``: validate parameters, list stages, and run a stage outside DVC.

The everyday entry point is ``dvc repro`` (incremental, cached); this CLI is for checking
``params.yaml`` and for running a Kedro stage directly while developing it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from oquab_repro.params import ParamsError, read_params_file, validate_params

ROOT_HELP = """Reproduce M. Oquab's thesis (2018) end to end.

Everyday use:
  dvc repro                     rebuild every stale stage (incremental, cached)
  dvc exp run -S KEY=VALUE      try a parameter change as a DVC experiment
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
    root = _find_root(Path.cwd())
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for name, spec in stages.items():
        keys = ", ".join(str(k) for k in spec.get("params", []))
        print(f"{name:<12} {spec['cmd']:<40} params: {keys}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = _find_root(Path.cwd())
    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        session.run(pipeline_names=args.stages or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oquab-repro", description=ROOT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate params.yaml and name any bad key").set_defaults(func=cmd_check)
    sub.add_parser("stages", help="list the DVC stages, their commands and the params they track").set_defaults(
        func=cmd_stages
    )
    run = sub.add_parser(
        "run", help="run Kedro stage pipelines directly (no DVC caching); default: every stage"
    )
    run.add_argument("stages", nargs="*", help="stage names, e.g. distances twosample")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
