"""`mim export`: a timm folder that `timm.create_model("local-dir:DIR", pretrained=True)` loads with no other
argument, whose `model(x)` equals the pooled features mim's evaluation uses (ViT and CNN); the hierarchical encoder
and a push without credentials are refused with one line, before anything is written or sent."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load

from mim.cli.main import main
from mim.models.cnn import CnnSpec
from mim.models.export import export_encoder, load_encoder, write_safetensors
from mim.models.hier import HierSpec
from mim.models.timm_export import _vit, export_for_timm, standard_vit_name
from mim.models.vit import ViTSpec, build_vit
from tests.helpers import one_error_line

DATA = {"source": "synthetic:64", "image_size": 16, "mean": [0.25, 0.5, 0.75], "std": [0.2, 0.3, 0.4], "to_rgb": True}


def _encoder_file(path, encoder, method="mae", data=DATA):
    export_encoder(encoder, str(path), extra={"method": method, "steps": "7", "data": json.dumps(data)})
    return str(path)


def _timm(folder):
    return timm.create_model(f"local-dir:{folder}", pretrained=True).eval()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_export_loads_in_timm_with_the_evaluation_features(tmp_path, monkeypatch, caplog, pool):
    torch.manual_seed(0)
    encoder = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)).eval()
    (tmp_path / "models" / "mae" / "seed-1").mkdir(parents=True)
    _encoder_file(tmp_path / "models" / "mae" / "seed-1" / "encoder.safetensors", encoder)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "eval.yaml").write_text(f"pool: {pool}\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO", "mim.export"):
        assert main(["export", "mae", "out", "--seed", "1"]) == 0  # the recipe form; the pooling from params/eval.yaml
    assert "(not that model's shape)" in caplog.text
    model = _timm(tmp_path / "out")
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), encoder.pooled(x, pool), atol=1e-6)
    cfg = model.pretrained_cfg
    assert model.num_classes == 0 and cfg["input_size"] == (3, 16, 16)
    assert list(cfg["mean"]) == DATA["mean"] and list(cfg["std"]) == DATA["std"]
    # names tell the truth: a registered constructor, the real shape in the tag, the card and the mim block
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architecture"] == "vit_base_patch16_224" and not config["mim"]["standard_shape"]
    assert cfg["tag"] == "mim_mae_w32_d2_h2_p4_16px"
    assert "embed_dim 32, depth 2, 2 heads, patch 4, 16 px" in (tmp_path / "out" / "README.md").read_text()
    # the same weights file is also a mim encoder file
    assert torch.equal(load_encoder(str(tmp_path / "out" / "model.safetensors")).pos_embed, encoder.pos_embed)

    # control: one changed weight changes timm's output
    file = tmp_path / "out" / "model.safetensors"
    state = load(file.read_bytes())  # a copy: the file is rewritten below
    w = state["blocks.0.mlp.fc1.weight"]  # (a constant shift before a LayerNorm would vanish: not a control)
    state["blocks.0.mlp.fc1.weight"] = w + 0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(2))
    with open(file, "wb") as f:
        write_safetensors(f, state, {})
    with torch.no_grad():
        assert not torch.allclose(_timm(tmp_path / "out")(x), encoder.pooled(x, pool), atol=1e-3)


def test_a_vit_pre_trained_at_a_lower_resolution_exports_at_the_evaluation_size(tmp_path):
    # FastMIM: pre-trained at 8 px, evaluated (and exported) at the data's 16 px with its positions resampled
    file = _encoder_file(tmp_path / "enc.safetensors",
                         build_vit(ViTSpec(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=1,
                                           pos_embed="learn")))
    export_for_timm(file, str(tmp_path / "out"), "mean")
    model = _timm(tmp_path / "out")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), load_encoder(file, img_size=16).eval().pooled(x, "mean"), atol=1e-6)
    assert model.pretrained_cfg["input_size"] == (3, 16, 16)
    assert load_encoder(str(tmp_path / "out" / "model.safetensors")).spec.img_size == 16  # mim reads it too


@pytest.mark.parametrize("input_size", [None, 32])
def test_cnn_export_loads_in_timm_with_the_evaluation_features(tmp_path, input_size):
    torch.manual_seed(0)
    spec = CnnSpec(name="resnet18", img_size=16, input_size=input_size, output_stride=8,
                   kwargs={"channels": [8, 16, 32, 64], "stem_width": 8})
    encoder = spec.build().eval()
    export = export_for_timm(_encoder_file(tmp_path / "enc.safetensors", encoder, "cim"), str(tmp_path / "out"),
                             "cls")  # a CNN has no class token: its map is averaged whatever eval.yaml says
    model = _timm(tmp_path / "out")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    timm_input = F.interpolate(x, size=input_size, mode="bilinear", align_corners=False) if input_size else x
    with torch.no_grad():
        assert torch.allclose(model(timm_input), encoder.pooled(x), atol=1e-5)
    assert model.pretrained_cfg["input_size"] == (3, input_size or 16, input_size or 16)
    assert export.config["architecture"] == "resnet18" and export.config["mim"]["pool"] == "mean"
    assert model.pretrained_cfg["tag"] == "mim_cim_resnet18_channels8-16-32-64_stem_width8_os8"


def test_standard_vit_shapes_keep_their_timm_names():
    assert standard_vit_name(ViTSpec(size="base", patch_size=16), 224) == "vit_base_patch16_224"
    assert standard_vit_name(ViTSpec(size="small", patch_size=32), 384) == "vit_small_patch32_384"
    assert standard_vit_name(ViTSpec(size="tiny", patch_size=4), 32) is None  # no timm ViT-Ti/4 at 32 px
    assert standard_vit_name(ViTSpec(size="micro", patch_size=16), 224) is None  # width 128: not a timm family
    arch, args, _, _, standard = _vit(ViTSpec(size="tiny", patch_size=16, img_size=224), 224, "cls")
    assert (arch, standard, args["global_pool"]) == ("vit_tiny_patch16_224", True, "token")
    # the family table agrees with timm's own defaults (built on the meta device: no weights, no time)
    model = timm.create_model("vit_tiny_patch16_224", device="meta")
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (192, 12, 3)


def test_hier_and_unnormalizable_files_are_refused_before_writing(tmp_path, capsys):
    hier = _encoder_file(tmp_path / "hier.safetensors", HierSpec(img_size=8, depths=(1, 1), num_heads=(1, 1),
                                                               window_sizes=(2, 2), embed_dim=8).build(), "mixmim")
    assert main(["export", "--encoder", hier, str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err, "export")
    assert "hierarchical (MixMIM) encoder has no timm architecture" in line and "load_encoder" in line
    assert not (tmp_path / "out").exists()
    bare = tmp_path / "bare.safetensors"
    export_encoder(build_vit(ViTSpec(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=1)), str(bare))
    with pytest.raises(ValueError, match="no 'data' record"):
        export_for_timm(str(bare), str(tmp_path / "out"), "cls")
    assert not (tmp_path / "out").exists()


def test_a_config_that_does_not_fit_the_weights_fails_in_timm(tmp_path):
    encoder = build_vit(ViTSpec(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=1))
    export_for_timm(_encoder_file(tmp_path / "enc.safetensors", encoder), str(tmp_path / "out"), "mean")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    config["model_args"]["depth"] = 1
    (tmp_path / "out" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="blocks.1"):  # timm loads strictly: no silently partial model
        _timm(tmp_path / "out")


def test_push_without_credentials_is_one_line_and_nothing_else(tmp_path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))

    def no_call(*args, **kwargs):
        raise AssertionError("the hub was called")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", no_call)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", no_call)
    enc = _encoder_file(tmp_path / "enc.safetensors",
                        build_vit(ViTSpec(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=1)))
    assert main(["export", "--encoder", enc, str(tmp_path / "out"), "--push", "my-lab/mae-micro"]) == 1
    line = one_error_line(capsys.readouterr().err, "export")
    assert "no Hugging Face credentials" in line and "HF_TOKEN" in line
    assert not (tmp_path / "out").exists()
    assert main(["export", "--encoder", enc, str(tmp_path / "out"), "--push", "no-org"]) == 1
    assert "org/name" in one_error_line(capsys.readouterr().err, "export")


def test_push_with_credentials_creates_the_repository_and_uploads_the_folder(tmp_path, monkeypatch, capsys):
    import httpx
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create", repo_id, kw["private"])) or "https://hf/x")
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw["folder_path"])))
    enc = _encoder_file(tmp_path / "enc.safetensors",
                        build_vit(ViTSpec(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=1)))
    out = str(tmp_path / "out")
    assert main(["export", "--encoder", enc, out, "--push", "my-lab/m", "--private"]) == 0
    assert calls == [("create", "my-lab/m", True), ("upload", "my-lab/m", out)]
    assert 'timm.create_model("hf-hub:my-lab/m", pretrained=True)' in (tmp_path / "out" / "README.md").read_text()

    def unreachable(self, **kw):
        raise httpx.ConnectError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", unreachable)
    capsys.readouterr()
    assert main(["export", "--encoder", enc, out, "--push", "my-lab/m"]) == 1
    assert "could not reach the Hugging Face hub" in one_error_line(capsys.readouterr().err, "export")


def test_a_huggingface_layer_norm_eps_exports_with_its_measured_gap_and_a_large_one_is_refused(tmp_path, caplog):
    """HF ViTs (a warm start from ViTMAE) use LayerNorm eps 1e-12; timm's is 1e-6 and config.json cannot say
    another: exported when the features barely change, refused when they would change."""
    spec = dict(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    trained_like = build_vit(ViTSpec(**spec, norm_eps=1e-12))
    with torch.no_grad():  # a trained ViT's tokens have a variance near 1, far above either eps (fresh ones do not)
        trained_like.patch_embed.proj.weight.mul_(20)
        trained_like.cls_token.mul_(50)
    hf_like = _encoder_file(tmp_path / "hf.safetensors", trained_like)
    with caplog.at_level("WARNING", logger="mim.export"):
        export_for_timm(hf_like, str(tmp_path / "out"), "cls")
    assert "model.norm_eps 1e-12" in caplog.text and "exported" in caplog.text
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = load_encoder(hf_like).eval().pooled(x, "cls")
        assert torch.allclose(_timm(tmp_path / "out")(x), ours, atol=1e-4 * float(ours.abs().max()))
    coarse = _encoder_file(tmp_path / "coarse.safetensors", build_vit(ViTSpec(**spec, norm_eps=10.0)))
    with pytest.raises(ValueError, match=r"model.norm_eps 10: .* timm would compute other features"):
        export_for_timm(coarse, str(tmp_path / "out2"), "cls")
    assert not (tmp_path / "out2").exists()
