"""Pipeline stages: each reads validated params files, calls the library, writes its declared outputs
(the paths in `layout`) and logs one MLflow run. `dvc.yaml` runs them as `mim <stage> ...`."""
