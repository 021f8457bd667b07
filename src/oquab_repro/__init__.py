"""oquab-repro: an incremental, end-to-end reproduction of Oquab (2018)
with Kedro, DVC and MLflow."""

__version__ = "0.1.0"
