"""Transfer and report: exact layer-decay lr per parameter for the ViT, hierarchical and CNN encoders, fine-tuning
(learning, resuming, refusing a checkpoint of another architecture), and the report with methods missing."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from mim.data import load_dataset
from mim.engine.checkpoint import CheckpointError, save_checkpoint
from mim.evaluation.finetune import Classifier, finetune
from mim.evaluation.layer_decay import layer_decay_groups
from mim.models.cnn import CnnEncoder, CnnSpec
from mim.models.export import export_encoder, load_encoder
from mim.models.hier import HierEncoder, HierSpec
from mim.models.vit import ViTSpec, build_vit
from mim.params import DataParams
from mim.params.bind.data import augment
from mim.project.graph import pipeline
from mim.project.results import baselines
from mim.stages.report import gather, render
from tests.helpers import ROOT


def _lr_of(model: torch.nn.Module, groups: list[dict]) -> dict[str, float]:
    return {name: g["lr"] for g in groups for name in g["names"]}


def test_layer_decay_for_a_vit():
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    model = Classifier(vit, 10)
    lr = _lr_of(model, layer_decay_groups(model, "encoder", 1.0, 0.05, 0.5))
    assert lr["encoder.patch_embed.proj.weight"] == lr["encoder.cls_token"] == 0.5**3  # depth 0 of L + 1 = 3
    assert lr["encoder.blocks.0.attn.qkv.weight"] == lr["encoder.blocks.0.norm1.bias"] == 0.5**2
    assert lr["encoder.blocks.1.mlp.fc2.weight"] == 0.5
    assert lr["encoder.norm.weight"] == lr["head.weight"] == lr["norm.bias"] == 1.0
    groups = layer_decay_groups(model, "encoder", 1.0, 0.05, 0.5)
    wd = {name: g["weight_decay"] for g in groups for name in g["names"]}
    assert wd["encoder.blocks.0.attn.qkv.weight"] == 0.05 and wd["encoder.blocks.0.attn.qkv.bias"] == 0.0
    assert wd["encoder.cls_token"] == 0.0
    assert "encoder.pos_embed" not in wd  # the fixed sin-cos table is not trained


def test_layer_decay_for_the_hierarchical_encoder_and_a_resnet():
    hier = HierEncoder(HierSpec(img_size=16, patch_size=2, embed_dim=32, depths=(1, 2), num_heads=(2, 2),
                                window_sizes=(4, 4)))
    lr = _lr_of(hier, layer_decay_groups(Classifier(hier, 10), "encoder", 1.0, 0.05, 0.5))
    # blocks counted across stages (1, 2, 3), the merge with the block after it, L + 1 = 4 for norm and head
    assert lr["encoder.patch_embed.weight"] == lr["encoder.embed_norm.weight"] == 0.5**4
    assert lr["encoder.stages.0.blocks.0.attn.qkv.weight"] == 0.5**3
    assert lr["encoder.merges.0.reduction.weight"] == lr["encoder.stages.1.blocks.0.mlp.fc1.weight"] == 0.5**2
    assert lr["encoder.stages.1.blocks.1.mlp.fc1.weight"] == 0.5
    assert lr["encoder.norm.weight"] == lr["head.weight"] == 1.0
    cnn = CnnEncoder(CnnSpec(name="resnet10t"))
    lr = _lr_of(cnn, layer_decay_groups(Classifier(cnn, 10), "encoder", 1.0, 0.05, 0.5))
    assert lr["encoder.body.conv1.0.weight"] == 0.5**5 and lr["encoder.body.layer1.0.conv1.weight"] == 0.5**4
    assert lr["encoder.body.layer4.0.conv1.weight"] == 0.5 and lr["head.weight"] == 1.0


def _tiny_data():
    d = DataParams(source="synthetic:256", image_size=16)
    return d, load_dataset(d.source, "train", size=16), load_dataset(d.source, "test", size=16)


def test_finetune_learns_and_resumes(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("mim.progress._isatty", lambda stream: False)  # plain lines, as under DVC
    caplog.set_level(logging.INFO, logger="mim.finetune")
    d, train, test = _tiny_data()
    kwargs = dict(epochs=4, batch_size=32, base_lr=2e-3, layer_decay=0.9, device="cpu", seed=0)
    torch.manual_seed(0)
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    init = {k: v.clone() for k, v in vit.state_dict().items()}
    url = str(tmp_path / "ft.pt")
    result = finetune(vit, train, test, augment(d), ckpt_url=url, ckpt_every=16, **kwargs)
    assert result.steps == 32 and result.top1 > 40  # 4 balanced classes: chance is 25 %
    losses = result.history["loss"]
    assert len(losses) == 32 and sum(losses[-4:]) < sum(losses[:4])
    line = [r.getMessage() for r in caplog.records if r.name == "mim.finetune"][-1]
    assert line.startswith("fine-tune: 32/32 steps (100%)") and "epoch 4.00/4" in line
    assert f"loss {losses[-1]:.4g}" in line and f"top1 {result.top1:.2f}%" in line  # one process: its own loss
    # the step-16 checkpoint is still there: a second run resumes from it and ends the same way
    vit.load_state_dict(init)
    resumed = finetune(vit, train, test, augment(d), ckpt_url=url, ckpt_every=16, **kwargs)
    assert resumed.top1 == result.top1 and resumed.history["loss"][-1] == pytest.approx(losses[-1], rel=1e-5)


def test_finetune_refuses_a_checkpoint_of_another_architecture(tmp_path):
    d, train, test = _tiny_data()
    other = Classifier(build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=48, depth=1, num_heads=2)), 4)
    url = str(tmp_path / "ckpt.pt")
    save_checkpoint({"model": other.state_dict(), "optimizer": {}, "scheduler": {}, "step": 1, "history": {}}, url)
    vit = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    with pytest.raises(CheckpointError, match=r"ckpt.pt: weights do not fit this model \(missing: "
                                              r"encoder.blocks.1.attn.proj.bias"):
        finetune(vit, train, test, augment(d), epochs=1, batch_size=32, device="cpu", ckpt_url=url)
    export_encoder(build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)),
                   str(tmp_path / "enc.safetensors"))
    assert load_encoder(str(tmp_path / "enc.safetensors")).spec.depth == 2


def test_report_with_some_methods_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params").mkdir()
    for name in ("mae", "dmjd", "transfer", "data"):
        (tmp_path / "params" / f"{name}.yaml").write_text((ROOT / "params" / f"{name}.yaml").read_text())
    (tmp_path / "params/pipeline.yaml").write_text(
        "methods: {mae: {}, dmjd: {}}\nbaselines: [mae]\nseeds: [0]\ntransfer_seeds: [0]\n")
    for stage in ("pretrain/mae", "evaluate/mae", "transfer/mae", "evaluate/baseline-mae", "transfer/scratch"):
        (tmp_path / "metrics" / stage).mkdir(parents=True)
    (tmp_path / "metrics/pretrain/mae/seed-0.json").write_text(json.dumps({"wall_time_s": 88.0,
                                                                           "images_per_s": 1354.0}))
    (tmp_path / "metrics/evaluate/mae/seed-0.json").write_text(json.dumps({"knn_top1": 74.89, "linear_top1": 70.28}))
    (tmp_path / "metrics/transfer/mae/seed-0.json").write_text(json.dumps({"finetune_top1": 85.5}))
    (tmp_path / "metrics/evaluate/baseline-mae/seed-0.json").write_text(json.dumps({"knn_top1": 64.97,
                                                                                   "linear_top1": 66.6}))
    (tmp_path / "metrics/transfer/scratch/seed-0.json").write_text(json.dumps({"finetune_top1": 80.1}))
    pipe = pipeline(tmp_path)
    rows = gather(tmp_path, pipe, tmp_path / "params", "mae")
    text = render(rows, baselines(tmp_path, pipe, "mae"), {"pretrain@mae-0": "abc123"}, {}, pipe.seeds)
    lines = text.splitlines()
    assert "| mae | - | - | 1 seed, no interval | 88 | 1354 | 74.89 | 70.28 | 85.50 | - | abc123 |" in lines
    assert "| dmjd | - | - | - | not run | - | not run | not run | not run | - | - |" in lines
    assert ("| random-init mae encoder (baseline) | - | - | 1 seed, no interval | - | - | 64.97 | 66.60 | 80.10 | - "
            "| - |") in lines
