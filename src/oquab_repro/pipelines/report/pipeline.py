"""Report stage: gather per-seed results, compare with the thesis, score its claims, then render
HTML and Markdown."""

from kedro.pipeline import Pipeline, node, pipeline

from oquab_repro.pipelines.report import nodes

# Stages whose metrics the report reads (each writes data/08_reporting/<stage>/metrics.json).
STAGES = (
    "data",
    "distances",
    "twosample",
    "causal",
    "gan",
    "transfer",
    "actions",
    "weak_voc",
    "weak_coco",
)


def create_pipeline(**kwargs) -> Pipeline:
    metrics = {stage: f"{stage}_metrics" for stage in STAGES}
    common = {
        "reference": "report_reference",
        "profile": "params:profile",
        "seed_table": "report_seeds",
        **metrics,
    }
    return pipeline(
        [
            node(nodes.seed_table, "report_seed_tables", "report_seeds", name="gather_seeds"),
            node(
                nodes.compare_with_thesis,
                common,
                "report_table_comparison",
                name="compare_with_thesis",
            ),
            node(
                nodes.score_claims,
                {"claims": "report_claims", **common},
                "report_table_scorecard",
                name="score_claims",
            ),
            node(
                nodes.render_report,
                {
                    "comparison": "report_table_comparison",
                    "scorecard": "report_table_scorecard",
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
