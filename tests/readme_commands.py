"""Where every command the README shows is executed (issue 14: the README cannot drift).

Each command :func:`tests.test_readme.readme_commands` finds has exactly one entry here, keyed by
its text (upper-case words and ``...`` are the README's placeholders), of one of three kinds:

- :class:`RunBy`: a test (``file::test_name``) or CI script runs it. ``note`` says what the test
  runs instead of the literal text, when it differs (smaller arguments, another stage).
- :class:`OnFinished`: ``tests/test_e2e_dvc.py`` runs it on the finished mini workspace (after a
  whole ``dvc repro``), placeholders filled in as ``run`` says, and matches ``expect`` in the output
  of ``run`` (or of ``show``, for commands that print nothing); ``undo`` puts back what ``run``
  changed outside the files the test restores itself.
- :class:`NotHere`: cannot run here; ``reason`` says why (full data, hours, an interactive server).

``tests/test_readme.py`` fails when a README command has no entry, when an entry matches no README
command, when a named test does not exist, and when an ``OnFinished`` command is not the README's
with only its placeholders filled in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunBy:
    where: (
        str  # "tests/x.py::test_name" (not run by the declaration test, only checked) or a script
    )
    note: str = ""  # what the test runs instead of the README's literal text, if anything


@dataclass(frozen=True)
class OnFinished:
    run: str  # the README command, placeholders filled in
    expect: str  # regex the output must match
    show: str = ""  # a command whose output is matched instead (``run`` prints nothing)
    undo: tuple[str, ...] = ()  # commands that restore state ``run`` changed (besides files)


@dataclass(frozen=True)
class NotHere:
    reason: str


Entry = RunBy | OnFinished | NotHere

E2E = "tests/test_e2e_dvc.py"
SCALING = "tests/test_scaling_out.py"
BUILT = f"{E2E}::test_repro_builds_every_stage"  # the module fixture `built` runs `dvc repro`
SEEDS = f"{E2E}::test_seed_sweep_runs_experiments_and_collects_per_seed_csv"
EXPERIMENTS = f"{E2E}::test_experiments_show_up_in_exp_show_compare_and_plots_diff"
MACHINE_A = f"{SCALING}::test_default_remote_is_a_folder_beside_the_repository"
MACHINE_B = f"{SCALING}::test_a_second_machine_restores_from_the_run_cache_instead_of_rerunning"
ROUND_TRIP = f"{SCALING}::test_push_and_pull_round_trip_data_and_models"
EXP_TRAVEL = f"{SCALING}::test_experiments_travel_through_the_git_remote_and_the_dvc_remote"
SERVER = f"{SCALING}::test_two_machines_log_to_one_tracking_server_and_compare_reads_both"
MIRROR_CLI = "tests/test_mirror.py::test_cli_builds_and_prints_the_rehearsal_commands"
VIZ = NotHere("an interactive web server from the `viz` extra, which CI's `.[dev]` lacks")
QUEUE = NotHere(
    "starts detached DVC queue workers that run every queued experiment, each a whole "
    "`dvc exp run` (what the tests run directly)"
)
REMOTES = "dvc remote list"
REHEARSAL = NotHere(
    "the capped full profile on a mirror: > 38 minutes on 2 cores, past CI's budget; opt-in "
    "tests/test_rehearsal.py (OQUAB_REHEARSAL=1) rehearses it with the same caps"
)

COMMANDS: dict[str, Entry] = {
    # quick start
    'python -m pip install -e ".[dev]"': RunBy(".ci/run"),
    "pytest": RunBy(".ci/run"),
    'pytest -m "not slow"': NotHere(
        "the test suite itself (a test cannot run the suite it is part of); `.ci/run` runs "
        "`pytest`, its superset"
    ),
    "dvc repro": RunBy(BUILT),
    "dvc dag": OnFinished("dvc dag", r"transfer_report"),
    "kedro viz run": VIZ,
    "kedro viz": VIZ,
    # parameters
    "oquab-repro check": OnFinished(
        "oquab-repro check", r"params\.yaml: valid \(profile=mini, seed=0"
    ),
    "oquab-repro stages": OnFinished(
        "oquab-repro stages", r"(?m)^pretrain@in1512 +kedro run --pipelines pretrain --tags in1512"
    ),
    "oquab-repro run distances": RunBy(
        "tests/test_cli.py::test_run_executes_one_stage_pipeline", "on a smaller grid"
    ),
    "dvc repro -s STAGE": OnFinished("dvc repro -s distances", r"up to date"),
    "kedro run --pipelines NAME": RunBy(
        f"{E2E}::test_unreachable_tracking_store_does_not_fail_the_stage",
        "NAME = data, with --tags tuebingen",
    ),
    "dvc repro --single-item": RunBy(
        f"{E2E}::test_a_training_stage_gives_the_same_metrics_and_weight_bytes_twice",
        "dvc repro --force --single-item actions",
    ),
    "kedro run": NotHere(
        "every pipeline outside DVC, the whole mini thesis again (~30 CPU-minutes); `dvc repro` "
        "runs the same pipelines stage by stage"
    ),
    # comparing runs
    "dvc exp run -S distances.parzen_radius=0.4": RunBy(
        EXPERIMENTS, "-S twosample.repetitions=8 (a cheaper stage than distances)"
    ),
    "dvc exp show": OnFinished("dvc exp show", r"workspace"),
    "dvc metrics diff": OnFinished("dvc metrics diff", r"data/08_reporting/\w+/metrics\.json"),
    "dvc plots diff": OnFinished(
        "dvc plots diff", r"dvc_plots/index\.html", undo=("rm -r dvc_plots",)
    ),
    # seeds
    "oquab-repro seeds run --seeds 0 1 2": RunBy(SEEDS, "--seeds 0 1 --stages twosample"),
    "oquab-repro seeds collect": RunBy(SEEDS),
    "oquab-repro seeds": RunBy(SEEDS),
    "dvc repro report": OnFinished("dvc repro report", r"up to date"),
    # full profile: rehearsal mirror, causal at thesis scale
    "dvc exp run -S profile=full": NotHere(
        "the full datasets (ImageNet needs an account, ~200 GB in all) and ~640 GPU hours"
    ),
    "oquab-repro mirror build /tmp/oquab-mirror": RunBy(MIRROR_CLI, "smaller counts"),
    "oquab-repro mirror build DIR": RunBy(MIRROR_CLI, "smaller counts"),
    "oquab-repro mirror build --help": RunBy(
        "tests/test_cli.py::test_help_exits_zero_and_explains"
    ),
    "oquab-repro mirror check DIR": RunBy(MIRROR_CLI),
    "oquab-repro mirror serve /tmp/oquab-mirror --port 8765": RunBy(
        "tests/test_mirror.py::test_cli_serves_the_mirror_until_interrupted", "a free port"
    ),
    (
        "dvc exp run -S profile=full -S data.full.mirror=http://127.0.0.1:8765 "
        "-S data.full.mirror_manifest=$M/SHA256SUMS -S data.full.imagenet_path=$M/ILSVRC2012 "
        "-S data.full.imagenet_fall11_path=$M/fall11 "
        "-S data.full.wordnet_fall11_path=$M/wordnet/fall11_wnids.txt "
        "-S data.full.wordnet_is_a_path=$M/wordnet/wordnet.is_a.txt data"
    ): RunBy(
        "tests/test_data_pipeline.py::test_full_profile_from_the_mirror_feeds_every_loader",
        "the data stage's pipeline with these settings (mirror.params_for) on a small mirror "
        "served over loopback, in-process rather than through `dvc exp run`",
    ),
    (
        "dvc exp run -S profile=full -S caps.images_per_set=8 -S caps.steps_per_epoch=1 "
        "-S caps.epochs=1 -S caps.ensemble_size=1 -S caps.gan_snapshot_epochs=1 "
        "-S gan.full.featuriser.sha256_prefix=null"
    ): REHEARSAL,
    "python benchmarks/bench_rehearsal.py --ci": REHEARSAL,
    "dvc exp run -n causal-thesis -S profile=full -S causal.full.workers=2 causal": NotHere(
        "the causal stage at thesis scale: ~3 hours on 2 cores (E = 100 CGANs per direction)"
    ),
    "dvc exp show --only-changed": OnFinished("dvc exp show --only-changed", r"workspace"),
    "dvc metrics show": OnFinished(
        "dvc metrics show", r"data/08_reporting/distances/metrics\.json"
    ),
    "python benchmarks/estimate_full.py": NotHere(
        "a benchmark: times a training step of every full-size model (minutes of CPU); speed is "
        "measured in benchmarks/, never in tests (developers' guide)"
    ),
    "python benchmarks/bench_causal_units.py": NotHere(
        "a benchmark: times CGAN units packed and unpacked (minutes of CPU); speed is measured in "
        "benchmarks/, never in tests (developers' guide)"
    ),
    # scaling out: torch.distributed
    "dvc repro pretrain@in1512": OnFinished("dvc repro pretrain@in1512", r"up to date"),
    "kedro run --pipelines pretrain --tags in1512": RunBy(
        BUILT, "as the command of the DVC stage pretrain@in1512"
    ),
    (
        "torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d "
        "--rdzv-endpoint node0.example:29400 --rdzv-id in1512 "
        "-m kedro run --pipelines pretrain --tags in1512"
    ): RunBy(
        "tests/test_distributed.py::test_two_nodes_meet_through_a_c10d_rendezvous_on_loopback",
        "two launchers, --nproc-per-node 1, endpoint on 127.0.0.1, a probe script (`kedro run` "
        "under torchrun: test_kedro_under_torchrun_writes_outputs_and_one_mlflow_run_from_rank_"
        "zero)",
    ),
    # scaling out: one DVC remote
    "dvc remote modify shared url s3://your-bucket/oquab-repro": OnFinished(
        "dvc remote modify shared url s3://your-bucket/oquab-repro",
        r"shared\s+s3://your-bucket/oquab-repro",
        show=REMOTES,
    ),
    "dvc remote modify shared url ssh://user@host/srv/oquab-repro": OnFinished(
        "dvc remote modify shared url ssh://user@host/srv/oquab-repro",
        r"shared\s+ssh://user@host/srv/oquab-repro",
        show=REMOTES,
    ),
    "dvc remote modify shared url /mnt/nfs/oquab-repro": OnFinished(
        "dvc remote modify shared url /mnt/nfs/oquab-repro",
        r"shared\s+/mnt/nfs/oquab-repro",
        show=REMOTES,
    ),
    "dvc remote add -d --local mine /data/oquab-remote": OnFinished(
        "dvc remote add -d --local mine /data/oquab-remote",
        r"mine\s+/data/oquab-remote\s+\(default\)",
        show=REMOTES,
    ),
    "dvc repro gan@lfw": RunBy(MACHINE_A),
    "oquab-repro push": RunBy(MACHINE_A),
    "dvc repro --pull gan@lfw": RunBy(MACHINE_B),
    "dvc repro --pull": RunBy(MACHINE_B),
    "dvc repro --pull STAGE": RunBy(MACHINE_B, "STAGE = gan@lfw"),
    "dvc push": RunBy(ROUND_TRIP),
    "dvc push --run-cache": RunBy(ROUND_TRIP),
    "dvc pull --run-cache": RunBy(
        ROUND_TRIP, "fetches the run-cache, then fails on the stages dvc.lock lacks, as documented"
    ),
    "dvc pull --with-deps STAGE": RunBy(ROUND_TRIP, "STAGE = gan@lfw"),
    "dvc exp push origin EXP": RunBy(EXP_TRAVEL),
    "dvc exp pull origin EXP": RunBy(EXP_TRAVEL),
    "dvc exp branch EXP NAME": RunBy(EXP_TRAVEL),
    "dvc checkout STAGE": RunBy(EXP_TRAVEL, "STAGE = twosample"),
    "dvc exp apply EXP": RunBy(EXPERIMENTS),
    "dvc exp apply": RunBy(EXPERIMENTS),
    "oquab-repro stages --waves": OnFinished(
        "oquab-repro stages --waves", r"round 0: check\nround 1: data "
    ),
    "dvc exp run --queue -S ...": OnFinished(
        "dvc exp run --queue -S twosample.repetitions=3",
        r"Queued",
        show="dvc queue status",
        undo=("dvc queue remove --all",),
    ),
    "dvc queue start -j N": QUEUE,
    "dvc queue start -j 2": QUEUE,
    # scaling out: one MLflow server
    (
        "mlflow server --host 0.0.0.0 --port 5000 "
        "--backend-store-uri sqlite:////srv/mlflow/mlflow.db --serve-artifacts "
        '--artifacts-destination /srv/mlflow/artifacts --allowed-hosts "tracking-host:5000"'
    ): RunBy(SERVER, "on 127.0.0.1 and a free port, without --allowed-hosts (loopback is allowed)"),
    "mlflow ui --backend-store-uri sqlite:///mlflow.db": NotHere(
        "an interactive web UI serving until stopped; `mlflow server`, which serves the same UI, "
        "is started by tests/test_scaling_out.py"
    ),
    "mlflow ui --backend-store-uri sqlite:////srv/mlflow/mlflow.db": NotHere(
        "an interactive web UI on the tracking server's store; `mlflow server` on such a store is "
        "started by tests/test_scaling_out.py"
    ),
    "dvc exp run -n lr-small -S pretrain.optim.lr=0.005 pretrain@in1000c": RunBy(
        SERVER, "`dvc exp run -n on-e -S twosample.repetitions=3 twosample` (a cheaper stage)"
    ),
    "oquab-repro compare --from mlflow lr-small lr-large": RunBy(SERVER, "names on-e and on-f"),
    # development
    "oquab-repro dvc-yaml": OnFinished(
        "oquab-repro dvc-yaml", r"dvc\.yaml: written \(\d+ stages\)"
    ),
}
