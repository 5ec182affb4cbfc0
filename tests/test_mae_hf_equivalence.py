"""Our MAE carries HF ViTMAEForPreTraining weights and gives the same loss for the same noise."""

import pytest
import torch

from mim.bench.convert_hf import mae_from_vitmae
from mim.masking import masking_from_noise
from mim.models.convert import convert_vitmae_state_dict

transformers = pytest.importorskip("transformers")


def _hf_model(norm_pix_loss: bool, layer_norm_eps: float = 1e-12, image_size: int = 32, mask_ratio: float = 0.75):
    config = transformers.ViTMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=image_size,
        patch_size=4, num_channels=3, decoder_hidden_size=32, decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4, decoder_intermediate_size=128, mask_ratio=mask_ratio,
        norm_pix_loss=norm_pix_loss, layer_norm_eps=layer_norm_eps,
    )
    torch.manual_seed(0)
    return transformers.ViTMAEForPreTraining(config).eval()


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_same_loss_as_transformers_vitmae(norm_pix_loss):
    hf = _hf_model(norm_pix_loss)
    ours = mae_from_vitmae(hf.config.to_dict(), hf.state_dict()).eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 32, 32, generator=gen)
    noise = torch.rand(4, 64, generator=gen)
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise)
        got = ours({"images": images, "mask": masking_from_noise(noise, 0.75)})
        pred = ours.predict(images, masking_from_noise(noise, 0.75))
    assert torch.allclose(got["loss"], expected.loss, atol=1e-5, rtol=0), (got["loss"].item(), expected.loss.item())
    assert torch.allclose(pred, expected.logits, atol=1e-5)
    assert torch.equal(masking_from_noise(noise, 0.75).mask, expected.mask)


@pytest.mark.parametrize(("image_size", "ratio"), [(32, 0.6), (28, 0.6), (24, 0.4), (28, 0.75)])
def test_official_mask_count_gives_transformers_loss_for_every_token_count_and_ratio(image_size, ratio):
    """N = 64, 49, 36 tokens: where N * ratio has a fractional part in (0, 0.5) transformers masks one token more
    than rounding half up; the converted model's own rule (`official`) matches it, `round` (the control) does not."""
    hf = _hf_model(False, image_size=image_size, mask_ratio=ratio)
    ours = mae_from_vitmae(hf.config.to_dict(), hf.state_dict()).eval()
    n = (image_size // 4) ** 2
    gen = torch.Generator().manual_seed(3)
    images, noise = torch.randn(2, 3, image_size, image_size, generator=gen), torch.rand(2, n, generator=gen)
    assert ours.mask_count == "official"
    drawn = ours.sample_masks(2, torch.Generator().manual_seed(0))  # the model's own masks: transformers' count
    assert drawn.num_visible == int(n * (1 - ratio))
    with torch.no_grad():
        expected = hf(pixel_values=images, noise=noise)
        official, rounded = masking_from_noise(noise, ratio, ours.mask_count), masking_from_noise(noise, ratio, "round")
        got = ours({"images": images, "mask": official})["loss"]
        control = ours({"images": images, "mask": rounded})["loss"]
    assert torch.equal(official.mask, expected.mask)
    assert torch.allclose(got, expected.loss, atol=1e-5, rtol=0), (got.item(), expected.loss.item())
    if ratio == 0.75:  # 49 * 0.75 = 36.75: both rules mask 37
        assert torch.equal(rounded.mask, expected.mask)
    else:
        assert rounded.num_masked == official.num_masked - 1 and not torch.allclose(control, expected.loss, atol=1e-5)


def test_gradients_match_transformers():
    hf = _hf_model(True)
    ours = mae_from_vitmae(hf.config.to_dict(), hf.state_dict())
    gen = torch.Generator().manual_seed(2)
    images, noise = torch.randn(2, 3, 32, 32, generator=gen), torch.rand(2, 64, generator=gen)
    hf(pixel_values=images, noise=noise).loss.backward()
    ours({"images": images, "mask": masking_from_noise(noise, 0.75)})["loss"].backward()
    hf_grad = hf.vit.embeddings.patch_embeddings.projection.weight.grad
    assert torch.allclose(ours.encoder.patch_embed.proj.weight.grad, hf_grad, atol=1e-5)


def test_legacy_key_names_convert():
    hf = _hf_model(True)
    legacy = {}
    for k, v in hf.state_dict().items():
        k = k.replace("vit.layers.", "vit.encoder.layer.").replace(".attention.q_proj.", ".attention.attention.query.")
        k = k.replace(".attention.k_proj.", ".attention.attention.key.")
        k = k.replace(".attention.v_proj.", ".attention.attention.value.")
        k = k.replace(".attention.o_proj.", ".attention.output.dense.")
        k = k.replace(".mlp.fc1.", ".intermediate.dense.").replace(".mlp.fc2.", ".output.dense.")
        legacy[k] = v
    a, b = convert_vitmae_state_dict(legacy), convert_vitmae_state_dict(hf.state_dict())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_incomplete_checkpoint_names_missing_keys():
    hf = _hf_model(True)
    state = {k: v for k, v in hf.state_dict().items() if "decoder_pred" not in k}
    with pytest.raises(KeyError, match="decoder.pred"):
        mae_from_vitmae(hf.config.to_dict(), state)
