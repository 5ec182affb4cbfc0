"""A throw-away copy of this project (dvc.yaml, params, mim/ code) shrunk to seconds, for pipeline tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mim.params.edit import edit_yaml_text

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"source": "synthetic:96", "image_size": 16},
    "eval": {"linear.epochs": 2, "linear.batch_size": 64, "batch_size": 64},
    "mae": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "method.decoder.embed_dim": 32,
            "train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "teacher": {"check_images": 16},
    "transfer": {"finetune.train_subset": 32, "finetune.batch_size": 16, "finetune.epochs": 1,
                 "finetune.label_fractions": [1.0]},
    "diversity": {"images": 16, "models.mae-encoder.level": 1, "models.img2vec-encoder.level": 1},
    "cim": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "method.generator.embed_dim": 32,
            "train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "mixmim": {"model.patch_size": 2, "model.embed_dim": 32, "model.depths": [1, 1], "model.num_heads": [2, 2],
               "model.window_sizes": [4, 4], "method.decoder.embed_dim": 32, "train.batch_size": 16,
               "train.steps": 4, "train.ckpt_every": 2},
    "dmjd": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "method.decoder.embed_dim": 32,
             "train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "maskfeat": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "train.batch_size": 16,
                 "train.steps": 4, "train.ckpt_every": 2},
    "fastmim": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "method.decoder.embed_dim": 32,
                "train.image_size": 8, "train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "cim-resnet": {"train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "cim-resnet-revdet": {"train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "img2vec": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "method.decoder.embed_dim": 32,
                "train.batch_size": 16, "train.steps": 4, "train.ckpt_every": 2},
    "tokenizer": {"k": 16, "iterations": 4, "max_patches": 2000, "heldout_images": 16},
    "ccvit": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "train.batch_size": 16,
              "train.steps": 4, "train.ckpt_every": 2},
    "simmim": {"model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "train.batch_size": 16,
               "train.steps": 4, "train.ckpt_every": 2},
}


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True).stdout


def make_project(dest: Path) -> Path:
    """Copy the pipeline (code, flows, params) into `dest`, shrink its params, commit it to a new git repository."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("params", "mim", "flows", "tasks", ".dvc"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__", "*.pyc")
                        if name == ".dvc" else ignore)
    (dest / "metrics" / "transfer").mkdir(parents=True, exist_ok=True)  # tracked, as in this repository
    shutil.copy2(ROOT / "metrics" / "transfer" / ".gitkeep", dest / "metrics" / "transfer" / ".gitkeep")
    for name, updates in TINY.items():
        path = dest / "params" / f"{name}.yaml"
        path.write_text(edit_yaml_text(path.read_text(), updates)[0])
    git(dest, "init", "-q")
    git(dest, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git(dest, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "project")
    return dest


def set_pipeline(project: Path, methods: tuple[str, ...], baselines: tuple[str, ...], seeds: tuple[int, ...] = (0,)
                 ) -> None:
    """Make the project's params/pipeline.yaml run `methods` (inputs as the in1k-vit-b16 set has them), `baselines`
    and `seeds`, committed: end-to-end tests that need not run every recipe."""
    import yaml

    every = yaml.safe_load((ROOT / "params" / "sets" / "in1k-vit-b16" / "pipeline.yaml").read_text())["methods"]
    spec = {"methods": {m: every[m] for m in methods}, "baselines": list(baselines), "seeds": list(seeds),
            "transfer_seeds": list(seeds)}
    (project / "params" / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", f"run {', '.join(methods)}")
