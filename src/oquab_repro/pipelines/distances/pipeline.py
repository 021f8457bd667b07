"""Distances stage: data → density → grid search → fits, metrics and Appendix D figures."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.distances import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(
                nodes.sample_points,
                ["params:distances", "params:seed"],
                "distances_points",
                name="sample_points",
            ),
            node(
                nodes.estimate_density,
                ["distances_points", "params:distances"],
                "distances_density",
                name="estimate_density",
            ),
            node(
                nodes.fit_rectangles,
                ["distances_points", "distances_density", "params:distances"],
                "distances_model_scores",
                name="fit_rectangles",
            ),
            node(
                nodes.summarise_fits,
                ["distances_model_scores", "params:distances"],
                ["distances_table_fits", "distances_metrics", "distances_plot_landscape"],
                name="summarise_fits",
            ),
            node(
                nodes.plot_data,
                ["distances_points", "distances_density", "params:distances"],
                "distances_fig_data",
                name="plot_data",
            ),
            node(
                nodes.plot_fits,
                ["distances_density", "distances_table_fits", "params:distances"],
                "distances_fig_fits",
                name="plot_fits",
            ),
            node(
                nodes.plot_transport,
                ["distances_density", "distances_table_fits", "params:distances"],
                "distances_fig_transport",
                name="plot_transport",
            ),
        ]
    )
