"""Flow `pipeline`: every method's stages for every seed, the baselines, then whatever else the DVC graph holds
(transfer, scratch, the report)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.common import EVAL_KEYS, check_methods, edit_params, flow_context, mean_scores, project
from mim.io import write_text
from mim.project.compare import comparison_table
from mim.project.graph import input_stage, pipeline_methods, recipe_stages
from mim.project.state import state_dir
from tasks import repro


@flow(name="pipeline", log_prints=True)
def pipeline_flow(methods: list[str] | None = None, epochs: float | None = None, steps: int | None = None,
                  subset: int | None = None) -> dict[str, Any]:
    """Run the whole graph (default: every method in dvc.yaml); `epochs`/`steps` go into every method's params."""
    logger = get_run_logger()
    methods = check_methods(project(), methods) if methods else list(pipeline_methods(project()))
    with flow_context("pipeline/all") as (root, parent):
        changed = edit_params(root, methods, epochs=epochs, steps=steps, subset=subset)
        ran = [s for stage in ["prepare", "baseline", "pixels"] for s in repro(stage, str(root))["ran"]]
        for m in methods:
            stages = [*filter(None, [input_stage(root, m)]), *recipe_stages(root, m)]
            ran += [s for stage in stages for s in repro(stage, str(root))["ran"]]
        ran += repro.with_options(task_run_name="dvc repro (report and the rest)")("", str(root))["ran"]
        table = comparison_table(root, methods)
        create_markdown_artifact(table, key="method-comparison", description="frozen-encoder accuracy per method")
        summary = state_dir(root) / "comparison.md"
        write_text(str(summary), table)
        parent.log_artifact(summary)
        for m in methods:
            parent.log_metrics({f"{m}/eval/{k}": v for k, v in mean_scores(root, "evaluate", m, EVAL_KEYS).items()})
        parent.set_tags({"stages_ran": ",".join(ran) or "none (all up to date)", "params_changed": ",".join(changed)})
        logger.info("comparison:\n%s", table)
    return {"methods": methods, "ran": ran, "changed": changed}
