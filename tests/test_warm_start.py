"""The full model file and `model.init_from`: our model and encoder files, a HF ViTMAE folder (transformers 5 and
4.x names) and the official MAE checkpoint layout start a run from their weights; what does not fit is said."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import save_file

from mim.masking import masking_from_noise
from mim.methods.warm_start import WarmStartError, resolve_init, warm_start
from mim.methods.weights import external_prefixes, load_model, model_state, save_model
from mim.params.bind import training
from mim.params.bind.training import run_identity
from tests.helpers import build_method, pretrain, tiny_params

INIT = "model.init_from"


def _fresh(method: str = "mae", seed: int = 1, **extra):
    torch.manual_seed(seed)
    return build_method(tiny_params(method, **extra))


def _equal(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in keys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step MAE run's folder (encoder.safetensors, model.safetensors, ...)."""
    out = tmp_path_factory.mktemp("mae-run")
    pretrain(tiny_params("mae", train__steps=2), str(out))
    return out


def test_full_model_kept_and_round_trips(trained):
    state, meta = load_model(str(trained / "model.safetensors"))
    assert meta["method"] == "mae" and json.loads(meta["recipe"])["method"]["name"] == "mae"
    assert json.loads(meta["excluded"]) == [] and json.loads(meta["encoder_spec"])["embed_dim"] == 32
    method = _fresh()
    assert not _equal(model_state(method), state, state)  # control: a fresh model differs
    result = warm_start(method, resolve_init(str(trained / "model.safetensors")))
    assert result.parts == {"encoder": 30, "decoder": 20} and not result.missing and not result.unexpected
    assert model_state(method).keys() == state.keys() and _equal(model_state(method), state, state)


def test_encoder_file_loads_the_encoder_only(trained):
    full, _ = load_model(str(trained / "model.safetensors"))
    method = _fresh()
    decoder_before = {k: v.clone() for k, v in method.state_dict().items() if k.startswith("decoder.")}
    result = warm_start(method, resolve_init(str(trained / "encoder.safetensors")))
    now = method.state_dict()
    assert _equal(now, full, [k for k in full if k.startswith("encoder.")])
    assert _equal(now, decoder_before, decoder_before)  # the decoder keeps its own init
    assert not _equal(now, full, ["decoder.pred.weight"])
    assert result.parts == {"encoder": 30} and len(result.missing) == 20


def test_encoder_part_loads_into_another_method(trained):
    full, _ = load_model(str(trained / "model.safetensors"))
    simmim = _fresh("simmim")
    result = warm_start(simmim, resolve_init(str(trained / "model.safetensors")))
    assert result.parts == {"encoder": 30} and all(k.startswith("decoder.") for k in result.unexpected)
    assert _equal(simmim.state_dict(), full, [k for k in full if k.startswith("encoder.")])


def _hf_mae(norm_pix_loss: bool):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTMAEConfig(  # the shapes of tests.helpers' tiny MAE
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=16,
        patch_size=4, num_channels=3, decoder_hidden_size=32, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=128, mask_ratio=0.75, norm_pix_loss=norm_pix_loss,
        layer_norm_eps=1e-6)
    torch.manual_seed(3)
    return transformers.ViTMAEForPreTraining(config).eval()


def _legacy(key: str) -> str:
    """transformers 5 -> 4.x names (what hub checkpoints such as facebook/vit-mae-base hold)."""
    for new, old in (("vit.layers.", "vit.encoder.layer."), (".attention.q_proj.", ".attention.attention.query."),
                     (".attention.k_proj.", ".attention.attention.key."),
                     (".attention.v_proj.", ".attention.attention.value."),
                     (".attention.o_proj.", ".attention.output.dense."), (".mlp.fc1.", ".intermediate.dense."),
                     (".mlp.fc2.", ".output.dense.")):
        key = key.replace(new, old)
    return key


@pytest.mark.parametrize("names", ["transformers5", "transformers4", "save_pretrained"])
def test_hf_vitmae_folder_gives_hf_loss(tmp_path, names):
    method = _fresh()
    hf = _hf_mae(method.norm_pix_loss)
    folder = tmp_path / "vit-mae"
    folder.mkdir()
    (folder / "config.json").write_text(hf.config.to_json_string())
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if names == "transformers5":
        save_file(state, str(folder / "model.safetensors"))
    elif names == "transformers4":
        torch.save({_legacy(k): v for k, v in state.items()}, folder / "pytorch_model.bin")
    else:  # the folder transformers itself writes (its on-disk names are not its in-memory ones)
        hf.save_pretrained(folder)
    gen = torch.Generator().manual_seed(4)
    images, noise = torch.randn(2, 3, 16, 16, generator=gen), torch.rand(2, 16, generator=gen)
    batch = {"images": images, "mask": masking_from_noise(noise, 0.75)}
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise).loss
        before = method.eval()(batch)["loss"]
        result = warm_start(method, resolve_init(str(folder)))
        got = method(batch)["loss"]
    assert not torch.allclose(before, expected, atol=1e-3)  # control: without init_from the loss differs
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got.item(), expected.item())
    assert result.layout == "HF ViTMAE" and result.parts == {"encoder": 30, "decoder": 20} and not result.unexpected


def _official(method) -> dict[str, torch.Tensor]:
    """`method`'s weights in the official MAE checkpoint's `model` layout."""
    out = {}
    for key, value in method.state_dict().items():
        for ours, theirs in (("decoder.mask_token", "mask_token"), ("decoder.pos_embed", "decoder_pos_embed"),
                             ("decoder.embed.", "decoder_embed."), ("decoder.blocks.", "decoder_blocks."),
                             ("decoder.norm.", "decoder_norm."), ("decoder.pred.", "decoder_pred."),
                             ("encoder.", "")):
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value.clone()
                break
    return out


def test_official_mae_checkpoint_with_missing_and_unexpected_keys(tmp_path, caplog):
    source = _fresh(seed=5)
    model = _official(source)
    assert "blocks.0.attn.qkv.weight" in model and "decoder_blocks.0.norm1.weight" in model
    del model["decoder_pred.weight"]
    model["head.weight"], model["head.bias"] = torch.zeros(10, 32), torch.zeros(10)  # a fine-tuned head
    path = tmp_path / "mae_pretrain_vit_base_full.pth"
    torch.save({"model": model, "epoch": 799}, path)
    method = _fresh()
    with caplog.at_level(logging.INFO, "mim.train"):
        result = warm_start(method, resolve_init(str(path)))
    loaded = [k for k in source.state_dict() if k != "decoder.pred.weight"]
    assert _equal(method.state_dict(), source.state_dict(), loaded)
    assert not _equal(method.state_dict(), source.state_dict(), ["decoder.pred.weight"])
    assert result.missing == ["decoder.pred.weight"]
    assert result.unexpected == ["encoder.head.bias", "encoder.head.weight"]  # our names for the file's head.*
    line = next(r.getMessage() for r in caplog.records if "loaded encoder" in r.getMessage())
    assert "missing (kept as initialised) 1: decoder.pred.weight" in line
    assert "unexpected (ignored) 2: encoder.head.bias, encoder.head.weight" in line


def test_shape_mismatch_names_key_shapes_and_param(tmp_path):
    model = _official(_fresh())
    model["patch_embed.proj.weight"] = torch.zeros(32, 3, 8, 8)
    torch.save({"model": model}, tmp_path / "other-patch.pth")
    with pytest.raises(WarmStartError) as err:
        warm_start(_fresh(), resolve_init(str(tmp_path / "other-patch.pth")))
    text = str(err.value)
    assert "\n" not in text and "encoder.patch_embed.proj.weight is [32, 3, 8, 8] in the file but [32, 3, 4, 4]" in text
    assert "set model.patch_size to 8" in text


def test_positions_of_another_grid(tmp_path, caplog):
    model = _official(_fresh())
    model["pos_embed"] = torch.randn(1, 1 + 64, 32)  # an 8x8 grid
    torch.save({"model": model}, tmp_path / "grid8.pth")
    learned = _fresh(**{"model.pos_embed": "learn"})
    result = warm_start(learned, resolve_init(str(tmp_path / "grid8.pth")))
    assert any(re.search(r"resampled from a 8x8 grid to 4x4", n) for n in result.notes)
    assert learned.encoder.pos_embed.shape == (1, 17, 32)
    fixed = _fresh()
    table = fixed.encoder.pos_embed.detach().clone()
    result = warm_start(fixed, resolve_init(str(tmp_path / "grid8.pth")))
    assert torch.equal(fixed.encoder.pos_embed, table) and "sin-cos table for 4x4 kept" in result.notes[0]


def test_init_file_digest_is_run_identity(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model": _official(_fresh())}, path)
    params = tiny_params("mae", **{"model.init_from": str(path)})
    before = run_identity(params, "data", resolve_init(str(path)))
    torch.save({"model": _official(_fresh(seed=9))}, path)  # same path, other weights
    after = run_identity(params, "data", resolve_init(str(path)))
    assert any(c.startswith("model.init_from_digest:") for c in after.changes_from(before))
    assert run_identity(params, "data", resolve_init(str(path))) == after


def test_init_from_applies_at_the_start_and_not_on_resume(trained, tmp_path, caplog, monkeypatch):
    params = tiny_params("mae", train__steps=1, **{"model.init_from": str(trained / "model.safetensors")})
    with caplog.at_level(logging.INFO, "mim.train"):
        pretrain(params, str(tmp_path / "b"))
        first = [r.getMessage() for r in caplog.records if r.getMessage().startswith(INIT)]
        caplog.clear()
        monkeypatch.setattr(training, "pretrain", lambda *args, **kwargs: None)  # only the set-up of a resumed run
        pretrain(params, str(tmp_path / "b"), resume="auto")
        second = [r.getMessage() for r in caplog.records if r.getMessage().startswith(INIT)]
    assert len(first) == 1 and "loaded encoder (30 tensors), decoder (20 tensors)" in first[0]
    assert len(second) == 1 and "not applied, the run continues from its checkpoint" in second[0]
    _, meta = load_model(str(tmp_path / "b" / "model.safetensors"))
    assert meta["init_from"] == str(trained / "model.safetensors") and meta["init_from_digest"]


def test_unknown_layout_and_unreachable_hub_are_one_line(tmp_path, monkeypatch):
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WarmStartError, match="a layout mim does not know"):
        warm_start(_fresh(), resolve_init(str(tmp_path / "other.pth")))
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(WarmStartError) as err:
        resolve_init("hf-hub:facebook/vit-mae-base")
    assert "\n" not in str(err.value) and "could not download it from the Hugging Face Hub" in str(err.value)


def test_full_model_leaves_out_the_frozen_teacher(tmp_path):
    img2vec = _fresh("img2vec")
    assert external_prefixes(img2vec) == ["teacher."]
    save_model(img2vec, str(tmp_path / "model.safetensors"), {})
    state, meta = load_model(str(tmp_path / "model.safetensors"))
    assert json.loads(meta["excluded"]) == ["teacher."] and any(k.startswith("decoder.") for k in state)
    assert not any(k.startswith("teacher.") for k in state)  # control: the method's own state has them
    assert any(k.startswith("teacher.") for k in img2vec.state_dict())
    result = warm_start(img2vec, resolve_init(str(tmp_path / "model.safetensors")))
    assert not result.missing and not result.unexpected  # the teacher comes from the teacher folder
