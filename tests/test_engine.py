"""Engine parts: schedule, optimizer groups, atomic checkpoints, NaN guard, export to timm."""

import json
import math

import pytest
import timm
import torch

from mim.engine.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from mim.engine.optim import build_adamw, param_groups, scaled_lr
from mim.engine.schedule import warmup_cosine
from mim.engine.trainer import NonFiniteLossError
from mim.io import atomic_write_bytes
from mim.methods.base import MIMMethod
from mim.models.export import export_encoder, load_encoder, read_metadata
from mim.models.vit import ViTSpec, build_vit
from tests.helpers import build_method, make_trainer, pretrain, tiny_params


def test_warmup_cosine_values():
    total, warm = 110, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(60, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(110, total, warm, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(35, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_lr_scaling_rule():
    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)


def test_no_weight_decay_on_norms_biases_and_tokens():
    method = build_method(tiny_params("mae"))
    decay, no_decay = param_groups(method, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in method.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "encoder.blocks.0.attn.qkv.weight" in decayed
    assert {"encoder.cls_token", "decoder.mask_token", "encoder.blocks.0.norm1.weight",
            "encoder.blocks.0.attn.qkv.bias"} <= undecayed
    assert "encoder.pos_embed" not in decayed | undecayed  # frozen sin-cos table is not optimized
    opt = build_adamw(method, 1e-3, 0.05)
    assert opt.defaults["fused"] in (None, False)  # CPU: no fused kernels


def test_checkpoint_round_trip_and_atomic_overwrite(tmp_path):
    url = str(tmp_path / "ck" / "last.pt")
    save_checkpoint({"step": 1, "w": torch.ones(3)}, url)
    save_checkpoint({"step": 2, "w": torch.zeros(3)}, url)
    state = load_checkpoint(url)
    assert state["step"] == 2 and torch.equal(state["w"], torch.zeros(3))
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["last.pt"]  # no temp file left


def test_checkpoint_through_fsspec_memory():
    url = "memory://ckpt-test/run/last.pt"
    save_checkpoint({"step": 7}, url)
    assert load_checkpoint(url)["step"] == 7


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "last.pt"
    atomic_write_bytes(str(bad), b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(bad)):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))


def test_state_from_another_model_names_the_keys():
    a = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2))
    b = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2))
    with pytest.raises(CheckpointError, match=r"unexpected: blocks\.2\."):
        load_state_strict(a, b.state_dict(), "other.pt")
    c = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2))
    with pytest.raises(CheckpointError, match="shape mismatch: blocks.0"):
        load_state_strict(a, c.state_dict(), "other.pt")


def test_resume_refuses_checkpoint_of_another_method(tmp_path):
    out = str(tmp_path / "run")
    pretrain(tiny_params("mae", train__steps=2), out)
    params = tiny_params("simmim", train__steps=2)
    method = build_method(params)
    from mim.data import load_dataset

    trainer = make_trainer(method, load_dataset("synthetic:128", size=16), params, out)
    with pytest.raises(CheckpointError, match="another model or method"):
        trainer.resume()


class _NaNAfter(MIMMethod):
    """Wraps a real method and poisons its loss from the `bad_from`-th call on."""

    def __init__(self, inner: MIMMethod, bad_from: int):
        super().__init__()
        self.inner, self.encoder, self.bad_from, self.calls = inner, inner.encoder, bad_from, 0

    def sample_masks(self, batch_size, generator):
        return self.inner.sample_masks(batch_size, generator)

    def forward(self, batch):
        out = self.inner(batch)
        self.calls += 1
        if self.calls >= self.bad_from:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    from mim.data import load_dataset

    params = tiny_params("mae", train__steps=12, train__ckpt_every=4)
    out = str(tmp_path / "run")
    method = _NaNAfter(build_method(params), bad_from=7)
    trainer = make_trainer(method, load_dataset("synthetic:128", size=16), params, out)
    with pytest.raises(NonFiniteLossError, match=r"step 7 .*last\.pt \(step 4\) is kept"):
        trainer.fit()
    ckpt = load_checkpoint(f"{out}/checkpoints/last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_pretrain_outputs_and_timm_loads_the_export(tmp_path):
    out = tmp_path / "run"
    result = pretrain(tiny_params("mae"), str(out))
    assert result.steps == 12 and math.isfinite(result.final_loss)
    assert {p.name for p in out.iterdir()} >= {"params.json", "encoder.safetensors", "history.csv",
                                               "train_metrics.json", "checkpoints", "loss.png", "reconstructions.png"}
    assert (out / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "params.json").read_text())["method"]["name"] == "mae"
    history = (out / "history.csv").read_text().splitlines()
    assert history[0] == "step,loss,lr,loss_pixel" and len(history) == 13  # the method's parts after loss, lr

    path = str(out / "encoder.safetensors")
    meta = read_metadata(path)
    model = timm.create_model(meta["timm_name"], pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": path}, **json.loads(meta["timm_kwargs"]))
    ours = load_encoder(path).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.eval().forward_features(x), ours.forward_features(x), atol=1e-5)
    fresh = build_vit(ours.spec)
    assert not torch.allclose(fresh.blocks[0].attn.qkv.weight, ours.blocks[0].attn.qkv.weight)


def test_export_round_trip_and_foreign_file(tmp_path):
    enc = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    path = str(tmp_path / "e.safetensors")
    export_encoder(enc, path)
    back = load_encoder(path)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), back.state_dict().values(), strict=True))
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an encoder exported by mim"):
        load_encoder(str(tmp_path / "other.safetensors"))
