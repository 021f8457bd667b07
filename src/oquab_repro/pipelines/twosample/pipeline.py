"""Two-sample calibration stage: simulate trials, then summarise rejection rates."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.twosample import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                nodes.simulate_trials,
                ["params:c2st", "params:twosample", "params:seed"],
                "twosample_model_trials",
                name="simulate_trials",
            ),
            node(
                nodes.summarise_calibration,
                ["twosample_model_trials", "params:c2st"],
                [
                    "twosample_metrics",
                    "twosample_plot_type1",
                    "twosample_plot_power",
                    "twosample_fig_calibration",
                ],
                name="summarise_calibration",
            ),
        ]
    )
