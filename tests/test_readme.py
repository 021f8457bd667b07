"""Every command the README shows is real: its program, subcommand and options exist, the DVC
stages it names are in dvc.yaml, and its ``-S key=value`` settings name params.yaml keys and give
values params.py accepts. Nothing expensive runs (``--help`` and parsing only), so the README
cannot drift from the code unnoticed.

Every command is also declared in ``tests/readme_commands.py`` with where it is executed: by a named
test, on the finished mini workspace (``tests/test_e2e_dvc.py``), or not here, with the reason. The
declaration is checked against the README both ways and against the tests it names.

Commands come from the fenced code blocks and from inline spans that start with a program name;
upper-case words (``DIR``, ``NAME``, ``EXP``) and ``...`` are placeholders.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from oquab_repro.params import read_params_file, validate_params
from tests.readme_commands import COMMANDS as DECLARED
from tests.readme_commands import NotHere, OnFinished, RunBy

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("dvc", "oquab-repro", "kedro", "pytest", "python", "torchrun", "mlflow")
DVC_GROUPS = {"exp", "metrics", "plots", "remote", "queue", "params", "stage", "cache"}
DVC_VALUED = {"-S", "--set-param", "-n", "--name", "-j", "--jobs"}  # options taking a value
PLACEHOLDER = re.compile(r"^([A-Z][A-Z_]*|\.\.\.)$")


def _split(line: str) -> list[str]:
    line = "" if line.lstrip().startswith("#") else re.split(r"\s#\s", line)[0]
    parts = (" ".join(p.split()).removesuffix("&").rstrip() for p in re.split(r"&&|;|\|", line))
    return [p for p in parts if p.split(" ", 1)[0] in PROGRAMS]


def readme_commands() -> list[tuple[str, bool]]:
    """(command, from a code block) for every command the README shows."""
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            found += [(c, True) for c in _split(line)]
    for span in re.findall(rf"`((?:{'|'.join(PROGRAMS)}) [^`]*)`", text):
        found += [(c, False) for c in _split(span)]
    return list(dict.fromkeys(found))


COMMANDS = readme_commands()


@functools.cache
def _help(*words: str) -> str:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / words[0]), *words[1:], "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"`{' '.join(words)} --help` failed: {proc.stderr[-500:]}"
    return proc.stdout


@functools.cache
def _stages() -> set[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    names = set()
    for name, spec in stages.items():
        items = spec.get("foreach") if isinstance(spec, dict) else None
        names |= {f"{name}@{item}" for item in items} if items else {name}
    return names


def _has_key(tree: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


def check_dvc(argv: list[str]) -> None:
    words = argv[1:3] if argv[1] in DVC_GROUPS else argv[1:2]
    text = _help("dvc", *words)
    rest, targets, sets = argv[1 + len(words) :], [], []
    while rest:
        token = rest.pop(0)
        if token.startswith("-"):
            assert token in text, f"`dvc {' '.join(words)}` has no option {token}"
            if token in DVC_VALUED:
                value = rest.pop(0)
                if token in {"-S", "--set-param"}:
                    sets.append(value)
        else:
            targets.append(token)
    if words in (["repro"], ["exp", "run"]):
        glob = "--glob" in argv
        unknown = [
            t
            for t in targets
            if not PLACEHOLDER.match(t)
            and not (fnmatch.filter(_stages(), t) if glob else t in _stages())
        ]
        assert not unknown, f"no DVC stage {unknown} in dvc.yaml"
    raw = read_params_file(ROOT / "params.yaml")
    changed = copy.deepcopy(raw)
    for setting in (s for s in sets if not PLACEHOLDER.match(s)):
        key, value = setting.split("=", 1)
        assert _has_key(raw, key), f"-S {setting}: params.yaml has no key {key}"
        _set(changed, key, yaml.safe_load(value))
    validate_params(changed, ROOT / "params.yaml")  # raises naming the key when a value is bad


def check_oquab(argv: list[str], full: bool) -> None:
    from oquab_repro.console import build_parser

    words = [w for w in argv[1:] if not w.startswith("-")]
    parser = build_parser()
    if full:
        args = parser.parse_args(argv[1:])  # SystemExit(2) names a wrong subcommand or option
        if args.command == "run":
            pipelines = ROOT / "src" / "oquab_repro" / "pipelines"
            assert all((pipelines / s / "pipeline.py").is_file() for s in args.stages), argv
    else:  # an inline mention: the subcommand it names exists
        lead = [w for w in words if not PLACEHOLDER.match(w)][:2]
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*lead, "--help"])
        assert done.value.code == 0


def check_kedro(argv: list[str]) -> None:
    words = [w for w in argv[1:3] if not w.startswith("-") and w in ("run", "viz")]
    if "viz" in words:
        # kedro-viz comes with the `viz` extra (the README says so), not with `.[dev]`, which CI
        # installs: check that the extra declares it, and its --help only where it is installed
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert any("kedro-viz" in d for d in extras["optional-dependencies"]["viz"])
        if importlib.util.find_spec("kedro_viz") is None:
            pytest.skip("kedro-viz is not installed (pip install -e '.[viz]')")
    text = _help("kedro", *words)
    for token in argv[1:]:
        if token.startswith("--"):
            assert token in text, f"`kedro {' '.join(words)}` has no option {token}"
    if "--pipelines" in argv:
        name = argv[argv.index("--pipelines") + 1]
        assert PLACEHOLDER.match(name) or (ROOT / "src/oquab_repro/pipelines" / name).is_dir()


def check_pytest(argv: list[str]) -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {m.split(":")[0] for m in config.get("markers", [])}
    if "-m" in argv:
        used = set(re.findall(r"\w+", argv[argv.index("-m") + 1])) - {"not", "and", "or"}
        assert used <= registered, f"markers {used - registered} are not registered"


def check_python(argv: list[str]) -> None:
    if argv[1:4] == ["-m", "pip", "install"]:
        extras = re.findall(r"\.\[(\w+)\]", " ".join(argv))
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert set(extras) <= set(declared["optional-dependencies"]), extras
    else:
        assert (ROOT / argv[1]).is_file(), f"{argv[1]} does not exist"


def check_torchrun(argv: list[str]) -> None:
    """Launcher options before ``-m``; the module's own command after it (here ``kedro run``)."""
    launcher, module = (argv[: argv.index("-m")], argv[argv.index("-m") + 1 :])
    text = _help("torchrun")
    for token in launcher[1:]:
        if token.startswith("--"):
            assert token in text, f"torchrun has no option {token}"
    assert module[0] == "kedro", module
    check_kedro(module)


def check_mlflow(argv: list[str]) -> None:
    text = _help("mlflow", argv[1])
    for token in argv[2:]:
        if token.startswith("--"):
            assert token in text, f"`mlflow {argv[1]}` has no option {token}"


def test_the_readme_shows_the_everyday_commands() -> None:
    shown = {c for c, _ in COMMANDS}
    assert 'python -m pip install -e ".[dev]"' in shown and "dvc repro" in shown
    assert any(c.startswith("oquab-repro check") for c in shown)


@pytest.mark.parametrize(("command", "full"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_command_is_real(command: str, full: bool) -> None:
    argv = shlex.split(command)
    if argv[0] == "dvc":
        check_dvc(argv)
    elif argv[0] == "oquab-repro":
        check_oquab(argv, full)
    elif argv[0] == "kedro":
        check_kedro(argv)
    elif argv[0] == "pytest":
        check_pytest(argv)
    elif argv[0] == "torchrun":
        check_torchrun(argv)
    elif argv[0] == "mlflow":
        check_mlflow(argv)
    else:
        check_python(argv)


# ---------------------------------------------------------------- where each command is executed


def test_every_readme_command_is_declared_where_it_runs() -> None:
    shown = {c for c, _ in COMMANDS}
    missing = sorted(shown - DECLARED.keys())
    assert not missing, (
        f"README commands no test runs or declares: add each to tests/readme_commands.py {missing}"
    )
    stale = sorted(DECLARED.keys() - shown)
    assert not stale, f"tests/readme_commands.py entries for commands the README lacks: {stale}"


TESTED = sorted((e.where, c) for c, e in DECLARED.items() if isinstance(e, RunBy))


@pytest.mark.parametrize(("where", "command"), TESTED, ids=[c for _, c in TESTED])
def test_declared_test_exists(where: str, command: str) -> None:
    """A node id ``file::test`` names a file and a ``def test_...`` in it (not run here); a
    script (``.ci/run``) holds the command itself."""
    path, _, name = where.partition("::")
    assert (ROOT / path).is_file(), f"{command!r}: {path} does not exist"
    text = (ROOT / path).read_text()
    if name:
        test = name.rsplit("::", 1)[-1]
        assert test.startswith("test_"), f"{command!r}: {where} is not a test"
        assert re.search(rf"^\s*(async )?def {re.escape(test)}\(", text, re.M), (
            f"{command!r}: {path} has no `def {test}(`"
        )
    else:
        assert command in text, f"{command!r}: {path} does not run it"


def fills(pattern: str, command: str) -> bool:
    """Whether ``command`` is the README's ``pattern`` with each placeholder filled in."""
    parts = [
        r"\S+(?: \S+)*" if w == "..." else r"\S+" if PLACEHOLDER.match(w) else re.escape(w)
        for w in shlex.split(pattern)
    ]
    return re.fullmatch(" ".join(parts), " ".join(shlex.split(command))) is not None


def test_commands_run_on_the_finished_workspace_are_the_readme_ones() -> None:
    for command, entry in DECLARED.items():
        if isinstance(entry, OnFinished):
            assert fills(command, entry.run), f"{entry.run!r} is not the README's {command!r}"
            assert not any(PLACEHOLDER.match(w) for w in shlex.split(entry.run)), entry.run
            re.compile(entry.expect)


def test_fills_accepts_placeholders_only() -> None:
    assert fills("dvc repro -s STAGE", "dvc repro -s distances")
    assert fills("dvc exp run --queue -S ...", "dvc exp run --queue -S a=1 -S b=2")
    assert not fills("dvc repro -s STAGE", "dvc repro -f distances")
    assert not fills("dvc metrics show", "dvc metrics show --json")


def test_commands_not_run_here_say_why() -> None:
    for command, entry in DECLARED.items():
        if isinstance(entry, NotHere):
            assert len(entry.reason.split()) >= 5, f"{command!r}: say why it cannot run here"
