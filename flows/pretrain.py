"""Flow `pretrain`: prepare -> [its input stage] -> pretrain@<method>-<seed> -> evaluate@<method>-<seed> for every
seed of params/pipeline.yaml; a deployment per method."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.common import EVAL_KEYS, check_methods, edit_params, flow_context, mean_scores, project
from mim.project.graph import input_stage, recipe_stages
from tasks import repro


@flow(name="pretrain", flow_run_name="pretrain-{method}", log_prints=True)
def pretrain_flow(method: str = "mae", epochs: float | None = None, steps: int | None = None,
                  base_lr: float | None = None, batch_size: int | None = None, subset: int | None = None,
                  evaluate: bool = True) -> dict[str, Any]:
    """Pre-train (and evaluate) one method for every seed, after the stage that builds its input (tokenizer) if any.

    Given parameters are written into params/<method>.yaml
    (`subset` into params/data.yaml) first, so `dvc repro` and DVC's cache see them."""
    logger = get_run_logger()
    check_methods(project(), [method])
    with flow_context(f"pretrain/{method}") as (root, parent):
        changed = edit_params(root, [method], epochs=epochs, steps=steps, base_lr=base_lr, batch_size=batch_size,
                              subset=subset)
        parent.set_tags({"method": method, "params_changed": ",".join(changed) or "none"})
        upstream = input_stage(root, method)  # e.g. the tokenizer: its own task, its own MLflow run
        stages = ["prepare", *([upstream] if upstream else []),
                  *recipe_stages(root, method, ("pretrain", "evaluate") if evaluate else ("pretrain",))]
        ran = [s for stage in stages for s in repro(stage, str(root))["ran"]]
        train = mean_scores(root, "pretrain", method, ("final_loss", "images_per_s"))
        scores = mean_scores(root, "evaluate", method, EVAL_KEYS) if evaluate else {}
        summary = {f"eval/{k}": v for k, v in scores.items()}  # means over the seeds
        if "images_per_s" in train:
            summary |= {"train/final_loss": train["final_loss"], "train/mean_img_per_s": train["images_per_s"]}
        parent.log_metrics(summary)
        parent.set_tags({"stages_ran": ",".join(ran) or "none (all up to date)"})
        logger.info("%s: stages run %s; %s", method, ran or "none (all up to date)",
                    ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    return {"method": method, "ran": ran, "changed": changed, **summary}
