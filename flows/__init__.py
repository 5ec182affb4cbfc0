"""Prefect flows: `pretrain` (one deployment per method, `pretrain/<method>`) and `pipeline` (`pipeline/all`).

Flows chain DVC stages through `tasks.repro`; flow parameters become edits of `params/*.yaml`, so DVC's
cache, not the flow, decides what re-runs. Each flow run is one MLflow parent run; stage runs nest under it.
"""
