"""MixMIM: the no-leak property of the masked hierarchical encoder in every stage, the source map on every
stage's grid, mixing and unmixing round trips, even batches, and the method's loss."""

from __future__ import annotations

import pytest
import torch

from mim.masking import combine_predictions, mix, mixing_map
from mim.models.export import export_encoder, load_encoder
from mim.models.hier import HierEncoder, HierSpec, same_source_mask, upsample_source
from mim.rng import generator_for
from tests.helpers import build_method, pretrain, tiny_params

SPEC = HierSpec(img_size=32, patch_size=2, embed_dim=32, depths=(1, 1, 1), num_heads=(2, 2, 2),
                window_sizes=(8, 4, 4))  # 16x16 -> 8x8 -> 4x4 tokens, windows smaller than the first grids


def _encoder() -> HierEncoder:
    torch.manual_seed(0)
    return HierEncoder(SPEC).eval()


def test_the_partner_never_leaks_into_an_images_tokens_in_any_stage():
    encoder = _encoder()
    source = mixing_map(encoder.grid, 0.5, generator_for(0, "mix")).source  # [4, 4], 1 = from the partner
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    changed = images.clone()
    pixels_from_partner = upsample_source(source, (32, 32)).bool()
    changed[3][:, pixels_from_partner] += 3.0  # image 3 where sample 0 takes its partner's tokens
    with torch.no_grad():
        before, after = encoder.forward_stages(images, source), encoder.forward_stages(changed, source)
    for stage, (a, b) in enumerate(zip(before, after, strict=True)):
        own = ~upsample_source(source, a.shape[1:3]).bool()  # sample 0's own tokens on this stage's grid
        assert torch.allclose(a[0][own], b[0][own], atol=1e-6), f"stage {stage}: image 3 leaked into image 0"
        assert (a[0][~own] - b[0][~own]).abs().max() > 1e-3  # the partner's tokens did change
    # without the same-source attention mask the change does leak: the test can fail
    unmasked_stage = encoder.stages[0]
    x = encoder.embed_norm(encoder.patch_embed(images).permute(0, 2, 3, 1))
    y = encoder.embed_norm(encoder.patch_embed(changed).permute(0, 2, 3, 1))
    m = upsample_source(source, x.shape[1:3]).float()[None, :, :, None]
    mixed_x, mixed_y = x * (1 - m) + x.flip(0) * m, y * (1 - m) + y.flip(0) * m
    with torch.no_grad():
        leak = unmasked_stage(mixed_x, None)[0] - unmasked_stage(mixed_y, None)[0]
    assert leak[~m[0, :, :, 0].bool()].abs().max() > 1e-3


def test_the_source_map_on_every_stage_agrees_with_the_last_grid_units():
    source = mixing_map((4, 4), 0.5, generator_for(1, "mix")).source
    assert int(source.sum()) == 8
    for scale, grid in ((4, (16, 16)), (2, (8, 8)), (1, (4, 4))):
        up = upsample_source(source, grid)
        for r in range(grid[0]):
            for c in range(grid[1]):
                assert up[r, c] == source[r // scale, c // scale]
    masks = same_source_mask(upsample_source(source, (8, 8)), 4)  # [4 windows, 1, 16, 16]
    assert masks.shape == (4, 1, 16, 16) and masks.diagonal(dim1=-2, dim2=-1).all()  # a token sees itself
    with pytest.raises(ValueError, match="a source map on a 4x4 grid does not tile the 6x6 grid"):
        upsample_source(source, (6, 6))


def test_mixing_is_undone_and_predictions_cover_each_position_once():
    tokens = torch.randn(6, 16, 5, generator=torch.Generator().manual_seed(0))
    source = mixing_map((4, 4), 0.5, generator_for(2, "mix")).flat
    mixed = mix(tokens, source)
    assert torch.equal(mix(mixed, source), tokens)  # round trip: every token back at its position
    assert torch.equal(mixed[0][source == 1], tokens[5][source == 1])  # sample 0 holds image 5 where source=1
    # a decoder copy that "predicts" the image whose tokens it kept: own copy = image i, partner copy = image B-1-i
    combined = combine_predictions(tokens, tokens.flip(0), source)
    assert torch.equal(combined, tokens)
    marks_own, marks_partner = torch.zeros(6, 16, 1), torch.ones(6, 16, 1)
    used = combine_predictions(marks_own, marks_partner, source)[..., 0]  # 0 = own copy, 1 = partner's copy
    assert torch.equal(used, (1 - source).float().expand(6, 16))  # own copy where hidden from it, once each


def test_odd_batches_are_rejected_and_even_ones_train():
    method = build_method(tiny_params("mixmim"))
    images = torch.randn(3, 3, 16, 16)
    source = method.sample_masks(3, generator_for(0, "m"))
    with pytest.raises(ValueError, match="pairs sample i with sample B-1-i, so each process's micro-batch must be "
                                         "even; got 3"):
        method({"images": images, "mask": source})
    out = method({"images": torch.randn(4, 3, 16, 16), "mask": source})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and method.encoder.stages[0].blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    images = torch.randn(4, 3, 16, 16)
    panels = method.reconstruct({"images": images, "mask": source})
    assert set(panels) == {"input", "prediction", "composite", "partner", "partner prediction"}
    own = upsample_source(source.source, (16, 16)) == 0  # [1, 1, H, W]: where each image shows its own pixels
    assert torch.equal(panels["composite"].masked_select(own), images.masked_select(own))


def test_hierarchical_encoder_exports_and_works_without_mixing(tmp_path):
    encoder = _encoder()
    x = torch.randn(2, 3, 32, 32)
    maps = encoder.forward_intermediates(x)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 128, 4, 4)]
    export_encoder(encoder, str(tmp_path / "enc.safetensors"))
    back = load_encoder(str(tmp_path / "enc.safetensors")).eval()
    assert back.spec == encoder.spec and torch.allclose(back.pooled(x), encoder.pooled(x), atol=1e-6)


@pytest.mark.slow
def test_mixmim_loss_decreases(tmp_path):
    params = tiny_params("mixmim", train__steps=30, optim__base_lr=3e-3, data__source="synthetic:256")
    losses = pretrain(params, str(tmp_path / "run")).history["loss"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


# windows of 2x2 tokens, row-major (0,0) (0,1) (1,0) (1,1); a 3x3 table of offsets (dy + 1) * 3 + (dx + 1),
# dy = y_query - y_key: the centre (4) on the diagonal, the key one row below and one column right of the query -> 0
INDEX_2X2 = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])


def test_relative_position_index_by_hand():
    from mim.models.hier import relative_position_index

    assert torch.equal(relative_position_index(2), INDEX_2X2)
    index = relative_position_index(3)  # 9 tokens, 25 offsets
    assert index.shape == (9, 9) and index.diagonal().eq(12).all() and set(index.flatten().tolist()) == set(range(25))
    assert index[0, 8] == 0 and index[8, 0] == 24  # query (0, 0) and key (2, 2): offset (-2, -2), the first entry


def test_window_attention_adds_the_bias_table_to_the_logits():
    """A block's output recomputed by hand: softmax(q k^T / sqrt(d) + table[offset(i, j), head]) v, the offsets
    written out above; with a same-source mask the bias is -inf across sources. Controls: a zero table equals a
    block without the bias, and a non-zero one changes the output."""
    from mim.models.hier import WindowBlock

    torch.manual_seed(0)
    block = WindowBlock(8, 2, 2, True, qkv_bias=True).eval()
    plain = WindowBlock(8, 2, 2, False, qkv_bias=True).eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if "relative_position" not in k})
    with torch.no_grad():
        block.relative_position_bias_table.normal_(0, 1.0)  # large enough to matter
    x = torch.randn(3, 4, 8)
    same = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]).bool()  # tokens {0, 1} and {2, 3}

    def by_hand(mask: torch.Tensor | None) -> torch.Tensor:
        attn = block.attn
        q, k, v = attn.qkv(block.norm1(x)).view(3, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)  # each [B, H, L, d]
        logits = q @ k.transpose(-1, -2) / 2.0  # sqrt(d) = 2
        bias = torch.stack([block.relative_position_bias_table[INDEX_2X2, h] for h in range(2)])  # [H, L, L]
        logits = logits + bias
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        y = x + attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 4, 8))
        return y + block.mlp(block.norm2(y))

    with torch.no_grad():
        assert torch.allclose(block(x), by_hand(None), atol=1e-5)
        assert torch.allclose(block(x, attn_mask=same[None, None].expand(3, 1, 4, 4)), by_hand(same), atol=1e-5)
        assert (block(x) - plain(x)).abs().max() > 1e-2  # the bias changes the output
        block.relative_position_bias_table.zero_()
        assert torch.allclose(block(x), plain(x), atol=1e-6)  # a zero bias is no bias


def test_the_encoder_has_a_bias_table_per_block_undecayed_and_old_exports_load_without_one(tmp_path):
    from mim.engine.optim import param_groups

    encoder = _encoder()
    tables = {n: p for n, p in encoder.named_parameters() if n.endswith("relative_position_bias_table")}
    assert sorted(tables) == [f"stages.{s}.blocks.0.relative_position_bias_table" for s in range(3)]
    assert [tuple(p.shape) for p in tables.values()] == [(15 * 15, 2), (7 * 7, 2), (7 * 7, 2)]  # (2W-1)^2 x heads
    assert 0.005 < float(tables["stages.0.blocks.0.relative_position_bias_table"].detach().std()) < 0.03  # N(0, 0.02)
    undecayed = [p for g in param_groups(encoder, 0.05) if g["weight_decay"] == 0 for p in g["params"]]
    assert all(any(t is p for p in undecayed) for t in tables.values())
    old = HierSpec.from_dict({k: v for k, v in SPEC.to_dict().items() if k != "rel_pos_bias"})
    assert not old.rel_pos_bias and HierSpec.from_dict(SPEC.to_dict()).rel_pos_bias
    assert not any("relative_position" in n for n, _ in HierEncoder(old).named_parameters())
