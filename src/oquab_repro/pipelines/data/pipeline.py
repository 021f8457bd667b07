"""Data pipeline: one tagged sub-pipeline per dataset (run one with ``--tags <dataset>``)."""

from kedro.pipeline import Pipeline

from oquab_repro.pipelines.data.tuebingen import create_tuebingen_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return create_tuebingen_pipeline()
