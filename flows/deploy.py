"""`python -m flows.deploy --pool NAME` (what `mim deploy` runs): register every deployment on a Prefect work pool,
so that `prefect deployment run pretrain/<recipe>` starts the stage wherever a worker of that pool runs (a GPU node)
instead of in the process that `mim serve` keeps.

The pool is created as a `process` pool when it does not exist; Docker and Kubernetes pools work the same way
(create them with `prefect work-pool create NAME --type kubernetes` and give the job an image holding this project).
The flows run in `--project` (default this project): a path the worker's node shares, with the same layout.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from flows.serve import deployment_specs

ENTRYPOINTS = {"pretrain": "flows/pretrain.py:pretrain_flow", "pipeline": "flows/pipeline.py:pipeline_flow"}


def ensure_pool(pool: str, pool_type: str = "process") -> None:
    """Create work pool `pool` of `pool_type` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type=pool_type))
        except ObjectAlreadyExists:
            pass


def deploy_all(pool: str, project: Path) -> list[str]:
    """Register `pretrain/<recipe>` for every recipe of `project`'s dvc.yaml, and `pipeline/all`, on `pool`; the
    flow runs execute in `project`. Returns the deployments' names."""
    from prefect import Flow

    ensure_pool(pool)
    names = []
    env = {"MIM_PROJECT_DIR": str(project), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for spec in deployment_specs(project):
        flow = Flow.from_source(source=str(project), entrypoint=ENTRYPOINTS[spec["flow"]])
        flow.deploy(name=spec["name"], work_pool_name=pool, parameters=spec["parameters"], tags=spec["tags"],
                    description=spec["description"], job_variables={"env": env, "working_dir": str(project)},
                    print_next_steps=False)
        names.append(f"{flow.name}/{spec['name']}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", required=True, help="work pool name (created as a process pool if missing)")
    parser.add_argument("--project", default=os.environ.get("MIM_PROJECT_DIR") or os.getcwd(),
                        help="the project the flows run in (default: MIM_PROJECT_DIR, else here)")
    args = parser.parse_args()
    project = Path(args.project).resolve()
    for name in deploy_all(args.pool, project):
        print(f"deployed {name} on work pool {args.pool!r}")
    print(f"start a worker where the stages should run: prefect worker start --pool {args.pool}")


if __name__ == "__main__":
    main()
