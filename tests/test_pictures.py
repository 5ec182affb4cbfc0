"""Pictures: `mim reconstruct` on a folder of photos (shared seeded masks, composites, attention maps) and the
reconstruction grids drawn while training (the steps, the PNG, and a run with pictures equal to one without)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mim.analysis.attention import cls_attention_maps, last_block_attention, last_block_inputs
from mim.analysis.reconstruct import pages, reconstruct
from mim.cli.main import main
from mim.engine.config import picture_steps
from mim.io import atomic_write
from mim.masking import picture_masking, random_masking
from mim.models.export import export_encoder, write_safetensors
from mim.params.bind.saved import load_saved_method, reconstruct_images
from mim.rng import generator_for
from mim.tracking import StageRun
from tests.helpers import build_method, pretrain, tiny_params

PNG = b"\x89PNG\r\n\x1a\n"


def photos(folder: Path) -> Path:
    """Three photos of odd sizes and formats (JPEG, PNG with alpha, grey PNG)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (23, 37, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (61, 50, 4), dtype=np.uint8), "RGBA").save(folder / "b.png")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(folder / "c.png")
    return folder


def model_folder(folder: Path, method_name: str, **overrides: object) -> Path:
    """What pre-training leaves in models/<m>: params.json, encoder.safetensors and the full-model file."""
    params = tiny_params(method_name, **overrides)
    method = build_method(params)
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(params.model_dump_json(indent=2))
    export_encoder(method.encoder, str(folder / "encoder.safetensors"))
    state = {k: v.contiguous() for k, v in method.state_dict().items()}
    atomic_write(str(folder / "model.safetensors"),
                 lambda f: write_safetensors(f, state, {"format": "mim-model/1", "method": method_name}))
    return folder


def test_reconstruct_folder_with_mae_and_simmim_shares_the_mask(tmp_path):
    images = photos(tmp_path / "photos")
    recs, written = {}, {}
    for name, extra in (("mae", {}), ("simmim", {"method__mask_unit_size": 4, "method__mask_ratio": 0.75})):
        folder = model_folder(tmp_path / "models" / name, name, **extra)
        method, params = load_saved_method(folder / "model.safetensors", folder / "params.json",
                                           folder / "encoder.safetensors")
        written[name] = reconstruct_images(method, params, str(images), str(tmp_path / "out" / name), seed=3,
                                           per_grid=8, device=torch.device("cpu"))
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        recs[name] = reconstruct(method, x, seed=3)
    for name, files in written.items():  # 3 images, up to 8 per grid: one reconstruction and one attention grid
        assert [Path(f).name for f in files] == ["reconstructions-01.png", "attention-01.png"], name
        assert all(Path(f).read_bytes()[:8] == PNG for f in files)
    masks = {}
    for name, rec in recs.items():
        assert list(rec.panels)[:4] == ["input", "masked", "prediction", "composite"]
        x, composite = rec.panels["input"], rec.panels["composite"]
        hidden = (rec.panels["masked"] == 0).all(1)  # [B, H, W]: masked pixels are zero in both methods' panels
        masks[name] = hidden
        assert 0.7 < hidden.float().mean() < 0.8  # 12 of 16 patches
        assert torch.equal(composite.masked_select(~hidden[:, None]), x.masked_select(~hidden[:, None])), name
        assert not torch.allclose(composite, x)  # control: the masked patches are predictions, not the input
    assert torch.equal(masks["mae"], masks["simmim"])
    assert "norm_pix_loss" in recs["mae"].caption and recs["simmim"].caption == ""
    other = reconstruct(build_method(tiny_params("mae")), recs["mae"].panels["input"], seed=4)
    assert not torch.equal((other.panels["masked"] == 0).all(1), masks["mae"])  # control: another seed differs


def test_picture_mask_is_mae_random_mask_at_unit_one_and_nested_across_ratios():
    token = picture_masking(4, (4, 4), 1, 0.75, generator_for(0, "pictures"))
    assert torch.equal(token.mask, random_masking(4, 16, 0.75, generator_for(0, "pictures")).mask)
    low = picture_masking(4, (4, 4), 2, 0.5, generator_for(0, "pictures")).mask
    high = picture_masking(4, (4, 4), 2, 0.75, generator_for(0, "pictures")).mask
    assert (high >= low).all() and high.sum() > low.sum()
    assert pages(3, 2, 2) == [[0, 1], [2, 0]] and pages(5, 8, 1) == [[0, 1, 2, 3, 4]]


def test_cls_attention_of_the_last_block():
    encoder = build_method(tiny_params("mae")).encoder.eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    weights = last_block_attention(encoder, x)  # [B, heads, 1 + N, 1 + N]
    assert weights.shape == (2, 2, 17, 17)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 17))
    # the weights are the block's own: softmax(q k^T) v through its projection is its attention output
    block = encoder.blocks[-1]
    with torch.no_grad():
        y = block.norm1(last_block_inputs(encoder, x))
        v = block.attn.qkv(y).view(2, 17, 3, 2, -1)[:, :, 2].transpose(1, 2)  # [B, H, N, hd]
        mine = block.attn.proj((weights @ v).transpose(1, 2).reshape(2, 17, -1))
        torch.testing.assert_close(mine, block.attn(y), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(block.attn.proj((weights.transpose(-2, -1) @ v).transpose(1, 2).reshape(2, 17, -1)),
                                  block.attn(y), atol=1e-3)  # control: other weights give another output
    maps = cls_attention_maps(encoder, x)
    assert maps.shape == (2, 2, 16, 16)
    torch.testing.assert_close(maps[..., ::4, ::4].sum((-2, -1)), 1 - weights[:, :, 0, 0])


def test_pictures_while_training_at_their_steps_and_weights_unchanged(tmp_path):
    got: list[tuple[int, bytes]] = []
    with_pictures = pretrain(tiny_params("mae", train__steps=4, train__picture_every=3), str(tmp_path / "a"),
                             on_picture=lambda step, png: got.append((step, png)))
    assert [s for s, _ in got] == [3, 4] and all(png[:8] == PNG for _, png in got)
    assert got[0][1] != got[-1][1]  # the model learned between the two pictures
    without = pretrain(tiny_params("mae", train__steps=4, train__picture_every=0), str(tmp_path / "b"),
                       on_picture=lambda step, png: pytest.fail("picture_every=0 draws nothing"))
    assert with_pictures.final_loss == without.final_loss
    a, b = ((tmp_path / d / "encoder.safetensors").read_bytes() for d in "ab")
    assert a == b  # a run with pictures equals one without
    parts = tmp_path / "a" / "parts"
    assert sorted(p.name for p in parts.iterdir()) == ["loss.csv", "loss_pixel.csv"]
    assert (parts / "loss_pixel.csv").read_text().splitlines()[0] == "step,loss_pixel"
    assert picture_steps(12, 5) == {5, 10, 12} and picture_steps(8, None) == {2, 4, 6, 8}
    assert picture_steps(3, None) == {1, 2, 3} and not picture_steps(9, 0)


def test_log_image_sends_the_png_with_its_step():
    import mlflow

    calls = []

    class Client:
        def log_image(self, run_id, image, **kw):
            calls.append((run_id, image.size, kw))

    png = atomic_png(tmp_image=Image.new("RGB", (5, 3), "red"))
    run = StageRun("pretrain", "mae", enabled=True)
    run._client, run.run_id = Client(), "r1"
    run.log_image("reconstructions", png, 7)
    run._queue.get()()
    assert calls == [("r1", (5, 3), {"key": "reconstructions", "step": 7, "synchronous": True})]
    inspect.signature(mlflow.MlflowClient.log_image).bind(None, "r1", None, **calls[0][2])  # the real API takes it
    off = StageRun("pretrain", "mae", enabled=False)
    off.log_image("reconstructions", png, 7)
    assert off._queue.empty()


def atomic_png(tmp_image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    tmp_image.save(buf, format="PNG")
    return buf.getvalue()


def test_reconstruct_without_a_full_model_is_one_line(tmp_path, capsys):
    folder = model_folder(tmp_path / "models" / "mae", "mae")
    (folder / "model.safetensors").unlink()
    assert main(["reconstruct", "--model", str(folder), "--images", str(tmp_path), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mim reconstruct: error: ") and "predates full-model saving" in err and "\n" not in err
