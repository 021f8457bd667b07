"""dvc.yaml and the Kedro project agree: each DVC stage declares exactly what its
pipeline reads and writes.

DVC decides what to rerun from these declarations, so a missing out, param or code dependency
would silently skip a rerun (stale results) and a superfluous one would rerun too much.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from oquab_repro.dvc_yaml import generate, imported_modules

SRC = Path("src") / "oquab_repro"


@dataclass
class StageView:
    name: str
    pipeline: object
    outs: dict[str, object]
    params: set[str]
    code_deps: set[str]
    data_deps: set[str]


@pytest.fixture(scope="module")
def project(repo_root: Path):
    from dvc.repo import Repo
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(repo_root)
    with KedroSession.create(project_path=repo_root) as session:
        catalog = session.load_context().catalog
    stages = []
    with Repo(str(repo_root)) as repo:
        for stage in repo.index.stages:
            if stage.name == "check":
                continue  # validation, not a Kedro pipeline: test_every_stage_waits_for_check
            argv = shlex.split(stage.cmd)
            assert argv[:3] == ["kedro", "run", "--pipelines"], (
                f"stage {stage.name} must run a Kedro pipeline"
            )
            pipe = pipelines[argv[3]]
            if "--tags" in argv:
                pipe = pipe.only_nodes_with_tags(*argv[argv.index("--tags") + 1].split(","))
            params = {
                k
                for d in stage.deps
                if d.__class__.__name__ == "ParamsDependency"
                for k in d.params
            }
            files = {
                str(d.def_path) for d in stage.deps if d.__class__.__name__ != "ParamsDependency"
            }
            code = {f for f in files if f.startswith("src/")}
            outs = {str(o.def_path): o for o in stage.outs}
            stages.append(StageView(stage.name, pipe, outs, params, code, files - code))
    return catalog, stages


def _filepath(catalog, name: str, root: Path) -> str | None:
    """The file, or folder (partitioned datasets), a catalog entry reads or writes."""
    config = catalog.config_resolver.resolve_pattern(name)
    path = config.get("filepath") or (
        config.get("path") if config.get("type", "").endswith("PartitionedDataset") else None
    )
    return Path(path).resolve().relative_to(root).as_posix() if path else None


def test_every_catalog_entry_a_pipeline_uses_can_be_built(project) -> None:
    """A wrong argument in catalog.yml would otherwise surface only when DVC runs that stage."""
    catalog, stages = project
    for st in stages:
        for name in st.pipeline.datasets():
            config = catalog.config_resolver.resolve_pattern(name)
            if name.startswith("params:") or config.get("type", "").endswith("MemoryDataset"):
                continue  # parameters and in-memory intermediates have no catalog entry to build
            assert catalog[name] is not None, f"stage '{st.name}': catalog entry {name}"


def test_outs_are_exactly_the_catalog_files(project, repo_root: Path) -> None:
    catalog, stages = project
    for st in stages:
        written = {p for n in st.pipeline.all_outputs() if (p := _filepath(catalog, n, repo_root))}
        for path in written:
            assert any(path == o or path.startswith(o + "/") for o in st.outs), (
                f"stage '{st.name}': {path} is written but not a DVC out; add it to dvc.yaml"
            )
        for out, spec in st.outs.items():
            produced = any(p == out or p.startswith(out + "/") for p in written)
            assert produced, f"stage '{st.name}': out {out} is not written by its pipeline"
            if out.endswith("/metrics.json"):
                assert spec.metric and not spec.use_cache, (
                    f"{out} must be a DVC metric with cache: false"
                )
            if "/plots/" in out:
                assert spec.plot and not spec.use_cache, (
                    f"{out} must be a DVC plot with cache: false"
                )


def test_catalog_inputs_are_deps(project, repo_root: Path) -> None:
    """Files a pipeline reads (and does not itself write) must be DVC deps,
    or reruns would miss them."""
    catalog, stages = project
    for st in stages:
        deps = st.code_deps | st.data_deps
        for name in st.pipeline.inputs():
            config = catalog.config_resolver.resolve_pattern(name)
            if config.get("filepath"):
                path = _filepath(catalog, name, repo_root)
                assert any(path == d or path.startswith(d + "/") for d in deps), (
                    f"stage '{st.name}' reads {path} ({name}) but does not list it in deps"
                )
            elif config.get("path"):  # a folder dataset: some dep must lie inside it
                folder = Path(config["path"]).resolve().relative_to(repo_root).as_posix()
                assert any(d == folder or d.startswith(folder + "/") for d in deps), (
                    f"stage '{st.name}' reads folder {folder} ({name}) but depends on nothing"
                    " inside it"
                )


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def test_params_are_exactly_the_keys_used(project) -> None:
    _, stages = project
    for st in stages:
        used = {i.removeprefix("params:") for i in st.pipeline.inputs() if i.startswith("params:")}
        for key in used:
            assert any(_related(key, listed) for listed in st.params), (
                f"stage '{st.name}' reads params:{key} but dvc.yaml does not track it"
            )
        for listed in st.params:
            assert any(_related(listed, key) for key in used), (
                f"stage '{st.name}' tracks '{listed}' but its pipeline never reads it"
            )


def test_code_deps_cover_every_imported_library_module(project, repo_root: Path) -> None:
    _, stages = project
    for st in stages:
        pipeline_dirs = [d for d in st.code_deps if d.startswith(f"{SRC}/pipelines/")]
        assert pipeline_dirs, f"stage '{st.name}' must depend on its pipeline folder"
        # a folder, or one module of a pipeline whose tagged nodes run as their own stage
        todo = [
            f
            for d in pipeline_dirs
            for f in ([repo_root / d] if d.endswith(".py") else (repo_root / d).rglob("*.py"))
        ]
        needed = imported_modules(todo, repo_root)
        for rel in needed:
            assert any(rel == d or rel.startswith(d + "/") for d in st.code_deps), (
                f"stage '{st.name}' imports {rel} but does not list it in deps"
            )
        for dep in st.code_deps - set(pipeline_dirs):
            if Path(dep).suffix not in {"", ".py"}:
                # a data file under src/ (e.g. the thesis reference numbers): see the next test
                continue
            assert any(n == dep or n.startswith(dep + "/") for n in needed), (
                f"stage '{st.name}' lists {dep} in deps but never imports it"
            )


def test_dvc_yaml_is_generated_from_the_project(repo_root: Path) -> None:
    """dvc.yaml is `oquab-repro dvc-yaml`'s output: a new variant, dataset or stage (or a changed
    import, catalog entry or params key) shows up here until the file is regenerated."""
    assert (repo_root / "dvc.yaml").read_text() == generate(repo_root), (
        "dvc.yaml is stale: run `oquab-repro dvc-yaml`"
    )


def test_dvc_lock_has_no_stage_dvc_yaml_lacks(repo_root: Path) -> None:
    import yaml

    lock = repo_root / "dvc.lock"
    if not lock.is_file():
        pytest.skip("no dvc.lock yet")
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        names = {s.name for s in repo.index.stages}
    stale = set(yaml.safe_load(lock.read_text())["stages"]) - names
    assert not stale, f"dvc.lock holds stages dvc.yaml no longer has: {sorted(stale)}; remove them"


def test_every_stage_waits_for_check(repo_root: Path) -> None:
    """DVC removes a stale stage's outs before its command runs: only a stage upstream of every
    other one, tracking every key, can refuse an invalid value while every output is still there."""
    from dvc.repo import Repo

    from oquab_repro.check import MARKER

    with Repo(str(repo_root)) as repo:
        stages = {s.name: s for s in repo.index.stages}
    check = stages.pop("check")
    params = [d for d in check.deps if d.__class__.__name__ == "ParamsDependency"]
    assert [(str(d.def_path), d.params) for d in params] == [("params.yaml", [])], (
        "check must track the whole of params.yaml (an empty key list tracks every key)"
    )
    assert [(str(o.def_path), o.persist) for o in check.outs] == [(MARKER, True)]
    for name, stage in stages.items():
        assert MARKER in {str(d.def_path) for d in stage.deps}, (
            f"stage {name} must depend on {MARKER}"
        )


def test_every_stage_can_be_saved_to_and_restored_from_the_run_cache(project, repo_root) -> None:
    """Machines share results through DVC's run-cache (README "Scaling out"). DVC neither saves nor
    restores a stage with a ``persist`` out (``dvc.stage.cache._can_hash``), so resume state
    (checkpoints, finished CGAN units) must be no out; git and DVC ignore it instead."""
    from dvc.repo import Repo

    catalog, stages = project
    for st in stages:
        persistent = [out for out, spec in st.outs.items() if spec.persist]
        assert not persistent, f"stage '{st.name}': persist outs {persistent} bar it from run-cache"
    folders = {
        config["folder"]
        for st in stages
        for name in st.pipeline.inputs()
        if "folder" in (config := catalog.config_resolver.resolve_pattern(name))
    }
    assert len(folders) > 10, "the training stages resume from checkpoint folders"
    probes = [f"{folder}/epoch_0001.pt" for folder in sorted(folders)]
    with Repo(str(repo_root)) as repo:
        for probe in probes:
            assert repo.dvcignore.is_ignored_file(str(repo_root / probe)), (
                f"add {probe} to .dvcignore"
            )
    for probe in probes:
        ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=repo_root)
        assert ignored.returncode == 0, f"{probe} must be git-ignored"


def test_readme_lists_the_stages_that_can_run_at_once(repo_root: Path) -> None:
    """README "Scaling out" prints `oquab-repro stages --waves`: it must follow dvc.yaml's DAG."""
    from dvc.repo import Repo

    from oquab_repro.sharing import waves

    with Repo(str(repo_root)) as repo:
        rounds = waves(repo.index.graph)
    printed = "\n".join(f"round {i}: {' '.join(names)}" for i, names in enumerate(rounds))
    assert f"```\n{printed}\n```" in (repo_root / "README.md").read_text(), (
        f"README's rounds are stale; paste `oquab-repro stages --waves`:\n{printed}"
    )
    done: set[str] = set()
    with Repo(str(repo_root)) as repo:
        upstream = {
            s.addressing: {u.addressing for u in repo.index.graph.successors(s)}
            for s in repo.index.graph
        }
    for names in rounds:
        assert all(upstream[n] <= done for n in names)
        done |= set(names)
    assert done == set(upstream)
