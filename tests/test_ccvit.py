"""CCViT: the centroid tokenizer (exact assignment, decode, files), replacement positions, the method."""

from __future__ import annotations

import math

import pytest
import torch

from mim.masking import block_masking, choose_unmasked
from mim.rng import generator_for
from mim.targets import CentroidTokenizer, codebook_usage, from_patch_vectors, patch_vectors
from mim.targets.centroids import nearest_centroid
from tests.helpers import build_method, pretrain, tiny_params


def _patches(n: int = 3000, dim: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed))


def _tokenizer(k: int = 16, patch_size: int = 4, channels: int = 3, seed: int = 0) -> CentroidTokenizer:
    return CentroidTokenizer.build(_patches(2000, channels * patch_size**2, seed), k, iters=5, seed=seed,
                                   patch_size=patch_size, channels=channels, verbose=False)


def test_assignment_is_the_brute_force_nearest_centroid():
    tok = _tokenizer(k=32)
    x = _patches(500, seed=1)
    brute = torch.cdist(x.double(), tok.centroids.double()).argmin(dim=1)
    assert torch.equal(tok.assign(x), brute)
    assert torch.equal(nearest_centroid(x, tok.centroids, backend="faiss"), brute)  # the CPU's
    assert torch.equal(nearest_centroid(x, tok.centroids, chunk=64, backend="matmul"), brute)  # a GPU's, in chunks
    assert torch.equal(nearest_centroid(x, tok.centroids, chunk=7, backend="matmul"), brute)
    assert tok.assign(x.view(5, 100, 48)).shape == (5, 100)


def test_reconstruction_error_falls_as_k_grows():
    x = _patches(4000, seed=2)
    errors = []
    for k in (4, 16, 64):
        tok = CentroidTokenizer.build(x, k, iters=10, seed=0, patch_size=4, channels=3, verbose=False)
        errors.append(float((tok.decode(tok.assign(x)) - x).pow(2).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_build_is_seeded_and_needs_enough_vectors():
    a, b = _tokenizer(seed=3), _tokenizer(seed=3)
    assert torch.equal(a.centroids, b.centroids) and a.info.inertia == b.info.inertia > 0
    with pytest.raises(ValueError, match="k=64 needs at least 64 patch vectors, got 10"):
        CentroidTokenizer.build(_patches(10), 64, patch_size=4, channels=3, verbose=False)


def test_save_load_roundtrip_and_missing_folder(tmp_path):
    tok = _tokenizer()
    tok.save(tmp_path / "tok")
    back = CentroidTokenizer.load(tmp_path / "tok")
    assert torch.equal(back.centroids, tok.centroids) and back.info == tok.info
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'}: no centroid tokenizer there"):
        CentroidTokenizer.load(tmp_path / "none")


def test_codebook_usage_and_perplexity():
    uniform = codebook_usage(torch.arange(8).repeat(10), k=16)
    assert uniform["usage"] == 0.5 and math.isclose(uniform["perplexity"], 8.0, rel_tol=1e-9)
    assert codebook_usage(torch.zeros(50, dtype=torch.long), k=16)["perplexity"] == pytest.approx(1.0)


def test_patch_vectors_are_channel_major_and_invert():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    v = patch_vectors(images, 4)  # [2, 4, 48]
    assert v.shape == (2, 4, 48)
    assert torch.equal(v[0, 1, :16], images[0, 0, :4, 4:8].flatten())  # first the whole red 4x4 of patch 1
    assert torch.equal(from_patch_vectors(v, 4, (2, 2), 3), images)


def test_replacement_is_exact_and_never_masked():
    gen = generator_for(0, "t")
    mask = block_masking(64, (8, 8), 24, gen, min_block=4)
    replace = choose_unmasked(mask.mask, 6, gen)
    assert (replace.sum(1) == 6).all() and not (replace & mask.mask.bool()).any()
    with pytest.raises(ValueError, match="cannot choose 41 of 40 unmasked tokens"):
        choose_unmasked(mask.mask, 41, gen)


@pytest.fixture
def ccvit_params(tmp_path):
    def make(patch_size: int = 4, **extra):
        folder = tmp_path / f"tok{patch_size}"
        if not folder.exists():
            _tokenizer(k=16, patch_size=patch_size).save(folder)
        return tiny_params("ccvit", method__tokenizer=str(folder), **extra)
    return make


def test_tokenizer_of_another_patch_size_is_a_clear_error(ccvit_params):
    params = ccvit_params(patch_size=2)
    with pytest.raises(ValueError, match="tokenizer built for 2-px patches with 3 channels, but the model uses 4-px"):
        build_method(params)


def test_ccvit_targets_replacement_and_gradients(ccvit_params):
    torch.manual_seed(0)
    method = build_method(ccvit_params())
    images = torch.randn(4, 3, 16, 16)
    corruption = method.sample_masks(4, generator_for(0, "c"))
    corrupted, ids, pixels = method.corrupt(images, corruption)
    assert torch.equal(ids, method.tokenizer.assign(pixels))
    changed = (patch_vectors(corrupted, 4) - patch_vectors(images, 4)).abs().amax(-1) > 1e-5  # [B, N]
    assert not (changed & ~corruption.replace).any()  # only replaced patches differ
    out = method({"images": images, "mask": corruption})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and set(out["logs"]) == {"loss_token", "loss_pixel", "token_acc"}
    assert method.token_head.weight.grad.abs().sum() > 0 and method.pixel_head.weight.grad.abs().sum() > 0
    assert method.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    panels = method.reconstruct({"images": images, "mask": corruption})
    assert all(v.shape == images.shape for v in panels.values())


@pytest.mark.slow
def test_ccvit_loss_decreases(ccvit_params, tmp_path):
    params = ccvit_params(train__steps=40, optim__base_lr=3e-3, data__source="synthetic:256")
    result = pretrain(params, str(tmp_path / "run"))
    losses = result.history["loss"]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert (tmp_path / "run" / "encoder.safetensors").is_file() and (tmp_path / "run" / "reconstructions.png").is_file()


def _masked_pixels(mask: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """[B, N] token mask (1 = masked) -> [B, 1, H, W] bool map of the pixels of masked patches."""
    m = mask.view(-1, 1, *grid).bool()
    return m.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def test_ccvit_losses_only_at_masked_and_replaced_positions(ccvit_params):
    """Both losses read the targets (centroid ids, pixels) only where a token is masked or replaced: perturbing the
    targets of every visible, unreplaced token leaves each loss as it was; control: perturbing one masked token's
    or one replaced token's targets changes them (a loss on visible tokens would fail the first assertion)."""
    torch.manual_seed(0)
    method = build_method(ccvit_params()).eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    corruption = method.sample_masks(4, generator_for(0, "c"))
    masked, replaced = corruption.mask.mask.bool(), corruption.replace
    corrupt = method.corrupt

    def losses(where: torch.Tensor) -> tuple[float, float]:
        """(CE, MSE) with the ids and pixel targets of the tokens `where` [B, N] perturbed."""
        def perturbed(images, corruption):
            corrupted, ids, pixels = corrupt(images, corruption)
            noise = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(2))
            return (corrupted, torch.where(where, (ids + 1) % method.tokenizer.k, ids),
                    torch.where(where.unsqueeze(-1), noise, pixels))
        method.corrupt = perturbed  # an instance attribute shadows the method for this call
        try:
            with torch.no_grad():
                logs = method({"images": images, "mask": corruption})["logs"]
        finally:
            del method.corrupt
        return float(logs["loss_token"]), float(logs["loss_pixel"])

    base = losses(torch.zeros_like(masked))
    visible = ~masked & ~replaced
    assert visible.sum() > 0 and losses(visible) == base  # exactly: visible tokens carry no loss
    for kind, where in (("masked", masked), ("replaced", replaced)):
        one = torch.zeros_like(masked)
        b, n = where.nonzero()[0].tolist()
        one[b, n] = True
        ce, mse = losses(one)
        assert ce != pytest.approx(base[0], rel=1e-6) and mse != pytest.approx(base[1], rel=1e-6), kind


def test_masked_pixels_never_reach_the_ccvit_encoder(ccvit_params):
    """The encoder sees the mask token where a patch is masked: changing the pixels under the mask leaves the
    token logits and pixel predictions unchanged; control: changing a visible, unreplaced patch changes them."""
    torch.manual_seed(0)
    method = build_method(ccvit_params()).eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    corruption = method.sample_masks(4, generator_for(0, "c"))
    mask = corruption.mask.mask
    noise = 3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))
    under_mask = _masked_pixels(mask, method.encoder.grid, 4)
    visible = (1 - mask) * (~corruption.replace).float()

    def outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return method.predict(method.corrupt(x, corruption)[0], mask)

    logits, pred = outputs(images)
    changed = images + noise * under_mask
    assert not torch.equal(changed, images)
    logits2, pred2 = outputs(changed)
    assert torch.allclose(logits, logits2, atol=1e-5) and torch.allclose(pred, pred2, atol=1e-5)
    control = images + noise * _masked_pixels(visible, method.encoder.grid, 4)
    logits3, _ = outputs(control)
    assert (logits - logits3).abs().max() > 1e-3
