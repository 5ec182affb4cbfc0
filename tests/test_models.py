"""Encoder contracts: our attention equals timm's, masked encoding equals full encoding on all tokens."""

import pytest
import torch
from timm.layers import Attention

from mim.models.attention import SplitQkvAttention
from mim.models.pos_embed import sincos_2d
from mim.models.vit import ViTSpec, build_vit


def test_split_qkv_attention_matches_timm_outputs_and_gradients():
    torch.manual_seed(0)
    ours, ref = SplitQkvAttention(32, num_heads=4), Attention(32, num_heads=4)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, 32, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), ref(x_ref)
    assert torch.allclose(out, out_ref, atol=1e-6)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)
    assert torch.allclose(ours.qkv.weight.grad, ref.qkv.weight.grad, atol=1e-5)


def test_forward_masked_with_every_token_equals_forward_features():
    enc = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)).eval()
    x = torch.randn(2, 3, 16, 16)
    ids = torch.arange(16).expand(2, -1)
    assert torch.allclose(enc.forward_masked(x, ids), enc.forward_features(x), atol=1e-6)
    # dropping tokens changes the class token: the encoder really sees only what it is given
    assert not torch.allclose(enc.forward_masked(x, ids[:, :4])[:, 0], enc.forward_features(x)[:, 0])


@pytest.mark.parametrize("size", ["micro", "tiny", "small"])
def test_presets_and_timm_kwargs(size):
    spec = ViTSpec(size=size, img_size=32, patch_size=4)
    enc = build_vit(spec)
    assert enc.embed_dim == spec.resolved()["embed_dim"] and len(enc.blocks) == spec.resolved()["depth"]
    assert enc.grid == (8, 8) and not enc.pos_embed.requires_grad


def test_sincos_table_shape_and_distinct_positions():
    table = sincos_2d(32, (4, 5), cls_token=True)
    assert table.shape == (1, 21, 32) and torch.equal(table[0, 0], torch.zeros(32))
    assert torch.unique(table[0, 1:], dim=0).shape[0] == 20
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(30, (2, 2))


def test_image_size_must_divide_by_patch():
    with pytest.raises(ValueError, match="img_size 30 is not divisible by patch_size 4"):
        build_vit(ViTSpec(img_size=30, patch_size=4))
