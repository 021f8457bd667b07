"""params.yaml is the single, validated source of parameters; errors name the key and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from oquab_repro.config_loader import ParamsYamlConfigLoader
from oquab_repro.params import ParamsError, read_params_file, validate_params


@pytest.fixture()
def raw(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repository_params_are_valid(repo_root: Path) -> None:
    params = validate_params(read_params_file(repo_root / "params.yaml"), repo_root / "params.yaml")
    assert params.profile in {"mini", "full"}
    assert params.profile == "mini", "the committed default profile must be the offline mini one"


def test_validation_keeps_every_value(repo_root: Path) -> None:
    """What Kedro's nodes receive is params.yaml itself: a validator that forgot to return its
    value would silently turn a key into None."""
    raw = read_params_file(repo_root / "params.yaml")
    assert validate_params(raw, repo_root / "params.yaml").model_dump() == raw


def test_unknown_key_is_named(raw: dict) -> None:
    raw["distances"]["parzen_radiuss"] = 0.3
    with pytest.raises(ParamsError, match=r"unknown key 'distances\.parzen_radiuss'"):
        validate_params(raw, Path("params.yaml"))


def test_invalid_value_is_named(raw: dict) -> None:
    raw["distances"]["parzen_radius"] = -1
    with pytest.raises(ParamsError, match=r"invalid value for 'distances\.parzen_radius' \(-1\)"):
        validate_params(raw, Path("params.yaml"))


def test_missing_key_is_named(raw: dict) -> None:
    del raw["c2st"]["alpha"]
    with pytest.raises(ParamsError, match=r"missing key 'c2st\.alpha'"):
        validate_params(raw, Path("params.yaml"))


def test_cross_field_rule(raw: dict) -> None:
    raw["distances"]["search"]["side_max"] = raw["distances"]["search"]["side_min"]
    with pytest.raises(ParamsError, match=r"distances\.search\.side_max.*larger than side_min"):
        validate_params(raw, Path("params.yaml"))


def test_bad_profile_and_device(raw: dict) -> None:
    raw["profile"] = "medium"
    raw["device"] = "tpu"
    with pytest.raises(ParamsError) as err:
        validate_params(raw, Path("params.yaml"))
    assert "'profile'" in str(err.value) and "'device'" in str(err.value)


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        read_params_file(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="must be a mapping"):
        read_params_file(tmp_path / "params.yaml")


def _project(tmp_path: Path, repo_root: Path, raw: dict) -> Path:
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "conf"


def test_kedro_reads_params_yaml_not_conf(tmp_path: Path, repo_root: Path, raw: dict) -> None:
    raw["distances"]["parzen_radius"] = 0.42
    loader = ParamsYamlConfigLoader(
        str(_project(tmp_path, repo_root, raw)), base_env="base", default_run_env="local"
    )
    assert loader["parameters"]["distances"]["parzen_radius"] == 0.42
    assert not list((repo_root / "conf").rglob("parameters*")), (
        "no second copy of parameters under conf/"
    )


def test_runtime_overrides_are_validated(tmp_path: Path, repo_root: Path, raw: dict) -> None:
    conf = _project(tmp_path, repo_root, raw)
    ok = ParamsYamlConfigLoader(
        str(conf), runtime_params={"seed": 7}, base_env="base", default_run_env="local"
    )
    assert ok["parameters"]["seed"] == 7
    bad = ParamsYamlConfigLoader(
        str(conf), runtime_params={"seed": -3}, base_env="base", default_run_env="local"
    )
    with pytest.raises(ParamsError, match="'seed'"):
        bad["parameters"]


def test_a_transfer_variant_names_a_known_source(raw: dict) -> None:
    raw["transfer"]["variants"]["pre_x"] = {
        "source": "in2000",
        "frozen": [],
        "adaptation_layers": 2,
    }
    with pytest.raises(
        ParamsError, match=r"'transfer.variants.pre_x.source'.*one of \['none', 'in1000c'"
    ):
        validate_params(raw, Path("params.yaml"))


def test_action_rows_are_transfer_variants(raw: dict) -> None:
    raw["actions"]["variants"] = ["nopre", "pre_unknown"]
    with pytest.raises(
        ParamsError, match=r"'actions'.*\['pre_unknown'\] are not in transfer.variants"
    ):
        validate_params(raw, Path("params.yaml"))


def test_stages_command_lists_every_expanded_stage(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from oquab_repro.console import main

    monkeypatch.chdir(repo_root)
    assert main(["stages"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in lines}
    check = next(line for line in lines if line.startswith("check "))
    assert check.endswith("params: params.yaml (every key)")  # it validates the whole file
    assert {
        "pretrain@in1000c",
        "transfer_none",
        "transfer_in1512",
        "weak@coco",
        "gan@lfw",
        "report",
    } <= names


def test_a_key_given_twice_is_named_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ndistances:\n  n_points: 10\n  n_points: 20\n")
    with pytest.raises(ParamsError, match=r"key 'n_points' given twice \(lines 3 and 4\)"):
        read_params_file(path)


def test_per_stage_ranks_name_a_stage_that_can_use_them(raw: dict) -> None:
    raw["distributed"]["per_stage"] = {"report": 2}
    with pytest.raises(
        ParamsError, match=r"distributed\.per_stage.*\['report'\] cannot run as ranks"
    ):
        validate_params(raw, Path("params.yaml"))
    raw["distributed"]["per_stage"] = {"gan": 0}
    with pytest.raises(ParamsError, match=r"distributed\.per_stage\.gan"):
        validate_params(raw, Path("params.yaml"))
