"""Causal stage: prepare pairs → CGAN-C2ST units (resumable) and baselines → Table
5.1, predictions, figures."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.causal import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                nodes.prepare_pairs,
                ["tuebingen_pairs", "params:causal", "params:profile", "params:seed"],
                "causal_pairs",
                name="prepare_pairs",
            ),
            node(
                nodes.cgan_c2st,
                [
                    "causal_pairs",
                    "params:causal",
                    "params:c2st",
                    "params:profile",
                    "params:seed",
                    "params:device",
                    "causal_unit_cache",
                    "params:caps.ensemble_size",
                    "params:caps.epochs",
                ],
                ["causal_model_statistics", "causal_samples", "causal_cgan_info"],
                name="cgan_c2st",
            ),
            node(
                nodes.baselines,
                ["causal_pairs", "params:causal", "params:profile", "params:seed"],
                ["causal_model_baselines", "causal_baseline_seconds"],
                name="baselines",
            ),
            node(
                nodes.summarise,
                [
                    "causal_pairs",
                    "causal_model_statistics",
                    "causal_model_baselines",
                    "causal_cgan_info",
                    "causal_baseline_seconds",
                    "report_reference",
                    "params:causal",
                    "params:profile",
                    "params:seed",
                    "params:caps.ensemble_size",
                ],
                [
                    "causal_model_predictions",
                    "causal_metrics",
                    "causal_table_accuracy",
                    "causal_table_ensemble_curve",
                    "causal_timings",
                ],
                name="summarise",
            ),
            node(
                nodes.plot_pairs,
                ["causal_samples", "causal_model_statistics", "params:causal", "causal_pairs"],
                "causal_fig_pairs",
                name="plot_pairs",
            ),
            node(
                nodes.plot_directions,
                ["causal_model_predictions", "causal_pairs"],
                "causal_fig_directions",
                name="plot_directions",
            ),
        ]
    )
