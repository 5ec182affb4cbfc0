"""Flow `pretrain`: prepare -> [its input stage] -> pretrain@<method> -> evaluate@<method>; a deployment per method."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.common import EVAL_KEYS, check_methods, edit_params, flow_context, project
from mim.project.graph import input_stage
from mim.project.results import read_metrics
from tasks import repro


@flow(name="pretrain", flow_run_name="pretrain-{method}", log_prints=True)
def pretrain_flow(method: str = "mae", epochs: float | None = None, steps: int | None = None,
                  base_lr: float | None = None, batch_size: int | None = None, subset: int | None = None,
                  evaluate: bool = True) -> dict[str, Any]:
    """Pre-train (and evaluate) one method, after the stage that builds its input (tokenizer) if any.

    Given parameters are written into params/<method>.yaml
    (`subset` into params/data.yaml) first, so `dvc repro` and DVC's cache see them."""
    logger = get_run_logger()
    check_methods(project(), [method])
    with flow_context(f"pretrain/{method}") as (root, parent):
        changed = edit_params(root, [method], epochs=epochs, steps=steps, base_lr=base_lr, batch_size=batch_size,
                              subset=subset)
        parent.set_tags({"method": method, "params_changed": ",".join(changed) or "none"})
        upstream = input_stage(root, method)  # e.g. the tokenizer: its own task, its own MLflow run
        stages = ["prepare", *([upstream] if upstream else []), f"pretrain@{method}"]
        stages += [f"evaluate@{method}"] if evaluate else []
        ran = [s for stage in stages for s in repro(stage, str(root))["ran"]]
        train = read_metrics(root, "pretrain", method)
        scores = read_metrics(root, "evaluate", method) if evaluate else {}
        summary = {f"eval/{k}": scores[k] for k in EVAL_KEYS if k in scores}
        if "images_per_s" in train:
            summary |= {"train/final_loss": train["final_loss"], "train/mean_img_per_s": train["images_per_s"]}
        parent.log_metrics(summary)
        parent.set_tags({"stages_ran": ",".join(ran) or "none (all up to date)"})
        logger.info("%s: stages run %s; %s", method, ran or "none (all up to date)",
                    ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    return {"method": method, "ran": ran, "changed": changed, **summary}
