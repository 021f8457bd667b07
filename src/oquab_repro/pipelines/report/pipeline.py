"""Report stage: compare with the thesis, then render HTML and Markdown."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.report import nodes

# Stages whose metrics the report reads (each writes data/08_reporting/<stage>/metrics.json).
STAGES = ("data", "distances", "twosample", "causal", "gan", "transfer", "actions", "weak_voc", "weak_coco")


def create_pipeline(**kwargs) -> Pipeline:
    metrics = {stage: f"{stage}_metrics" for stage in STAGES}
    return pipeline(
        [
            node(
                nodes.compare_with_thesis,
                {"reference": "report_reference", "profile": "params:profile", **metrics},
                "report_table_comparison",
                name="compare_with_thesis",
            ),
            node(
                nodes.render_report,
                {
                    "comparison": "report_table_comparison",
                    "reference": "report_reference",
                    "figures": "report_figures",
                    "profile": "params:profile",
                    **metrics,
                },
                ["report_html", "report_markdown"],
                name="render_report",
            ),
        ]
    )
