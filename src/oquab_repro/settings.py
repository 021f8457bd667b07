"""Kedro project settings: parameters come from ``params.yaml`` and every
run is tracked in MLflow."""

from oquab_repro.config_loader import ParamsYamlConfigLoader
from oquab_repro.hooks import DistributedHook, MlflowTrackingHook

HOOKS = (DistributedHook(), MlflowTrackingHook())

CONFIG_LOADER_CLASS = ParamsYamlConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}
