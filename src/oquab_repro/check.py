"""The ``check`` DVC stage: validate ``params.yaml`` and the profile's inputs before DVC touches
any other stage.

DVC removes a stale stage's outputs *before* it runs the stage's command, so a value that Kedro
rejects later has already cost the last good results. Every stage therefore depends on the output
of ``check`` (``oquab-repro check --marker <path>``), which tracks the whole of ``params.yaml``:
any change reruns it first, and an invalid value stops ``dvc repro`` there, with one line per bad
key, while every other output is still on disk.

The marker's bytes never depend on the parameters: after a valid change DVC sees the same marker,
so only the stages that track the changed key rerun.
"""

from __future__ import annotations

import socket
import urllib.parse
from pathlib import Path

from oquab_repro.params import Params, ParamsError, read_params_file, validate_params

MARKER = "data/02_intermediate/check/params.ok"
MARKER_TEXT = (
    "params.yaml passed `oquab-repro check`. Written by the DVC stage `check`, which every stage\n"
    "depends on; these bytes never change, so a valid edit reruns only the stages that read it.\n"
)
PROBE_SECONDS = 3.0  # one TCP connection per host an archive still has to come from


def _missing_paths(params: Params) -> list[str]:
    """The full profile's local inputs (ImageNet cannot be downloaded) that do not exist."""
    full = params.data.full
    wanted = (
        (
            "imagenet_path",
            full.imagenet_path,
            Path.is_dir,
            "the ILSVRC2012 archives or train/ val/",
        ),
        ("imagenet_fall11_path", full.imagenet_fall11_path, Path.is_dir, "the fall 2011 synsets"),
        ("wordnet_fall11_path", full.wordnet_fall11_path, Path.is_file, "fall11_wnids.txt"),
        ("wordnet_is_a_path", full.wordnet_is_a_path, Path.is_file, "wordnet.is_a.txt"),
    )
    return [
        f"data.full.{key} = {value}: not found; point it at {what} (image-net.org, account needed)"
        for key, value, exists, what in wanted
        if not exists(Path(value))
    ]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError:
        return False
    return True


def _unfetchable_archives(params: Params) -> list[str]:
    """Archives neither complete in ``download_dir`` nor on a host that answers now."""
    from oquab_repro.lib.download import ARCHIVES

    full = params.data.full
    unknown = sorted(set(full.archives) - set(ARCHIVES))
    if unknown:
        return [f"data.full.archives: unknown {unknown}; choose from {sorted(ARCHIVES)}"]
    alive: dict[tuple[str, int], bool] = {}
    problems = []
    for name in full.archives:
        archive = ARCHIVES[name]
        if (Path(full.download_dir) / archive.filename).is_file():
            continue  # a file without .part is complete (lib/download.py renames it when verified)
        url = f"{full.mirror.rstrip('/')}/{archive.mirror_path}" if full.mirror else archive.url
        parts = urllib.parse.urlsplit(url)
        where = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        if where not in alive:
            alive[where] = _reachable(*where)
        if not alive[where]:
            problems.append(
                f"data.full.archives: {name} is not in {full.download_dir} and "
                f"{where[0]}:{where[1]} "
                f"does not answer; put {archive.filename} there or get online"
            )
    return problems


PROFILE_INPUTS = {"mini": (), "full": (_missing_paths, _unfetchable_archives)}
"""Per profile, the checks that its data can be had (mini builds its own, offline)."""


def check_project(root: Path, inputs: bool = True) -> Params:
    """Validate ``root/params.yaml`` and (``inputs``) that the profile's data can be had; raise
    :class:`ParamsError` with one line per problem, naming the key and the fix."""
    path = root / "params.yaml"
    params = validate_params(read_params_file(path), path)
    if inputs:
        problems = [p for probe in PROFILE_INPUTS[params.profile] for p in probe(params)]
        if problems:
            raise ParamsError("\n".join(f"{path}: profile {params.profile}: {p}" for p in problems))
    return params


def write_marker(root: Path, marker: str = MARKER) -> Path:
    """The ``check`` stage's output: fixed bytes (see the module docstring)."""
    out = root / marker
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(MARKER_TEXT)
    return out
