"""MLflow lineage: the only package that imports mlflow. Runs are logged from global rank 0 only."""

from mim.tracking.lineage import file_md5, flatten, git_commit, path_md5
from mim.tracking.run import (
    PARENT_RUN_ENV,
    TRACKING_ENV,
    StageRun,
    connect,
    flow_run,
    latest_run_ids,
    tracking_enabled,
)
from mim.tracking.uri import local_store, tracking_uri

__all__ = ["PARENT_RUN_ENV", "TRACKING_ENV", "StageRun", "connect", "flow_run", "file_md5", "flatten", "git_commit",
           "latest_run_ids", "local_store", "path_md5", "tracking_enabled", "tracking_uri"]
