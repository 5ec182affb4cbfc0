"""This repository rather than the library: its layout (`layout`), the `dvc.yaml` graph (`graph`), what the stages
wrote (`results`, `compare`) and its local Prefect and MLflow servers (`services`)."""
