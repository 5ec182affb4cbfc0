"""Token diversity: 0 for identical tokens, 1 for orthogonal ones, blind to scale, equal to the pairwise definition."""

import pytest
import torch

from mim.analysis import diversity_summary, token_diversity


def test_identical_tokens_have_zero_diversity():
    tokens = torch.randn(3, 1, 16).expand(3, 10, 16)
    assert torch.allclose(token_diversity(tokens), torch.zeros(3), atol=1e-6)


def test_orthogonal_tokens_have_diversity_one():
    tokens = torch.eye(8).unsqueeze(0) * torch.arange(1, 9).view(1, 8, 1)  # orthogonal, different lengths
    assert torch.allclose(token_diversity(tokens), torch.ones(1), atol=1e-6)


def test_invariant_to_token_scale_and_matches_pairwise_definition():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(4, 6, 5, generator=gen)
    scaled = tokens * torch.rand(4, 6, 1, generator=gen).mul(10).add(0.1)
    assert torch.allclose(token_diversity(scaled), token_diversity(tokens), atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(tokens[:, :, None], tokens[:, None, :], dim=-1)  # [B, N, N]
    off = ~torch.eye(6, dtype=torch.bool)
    expected = 1 - cos[:, off].mean(-1)
    assert torch.allclose(token_diversity(tokens), expected, atol=1e-5)


def test_bad_shapes_and_summary():
    with pytest.raises(ValueError, match=r"needs \[B, N >= 2, C\] features, got \[2, 1, 4\]"):
        token_diversity(torch.zeros(2, 1, 4))
    s = diversity_summary(torch.tensor([0.2, 0.4]))
    assert s["mean"] == pytest.approx(0.3) and s["images"] == 2 and s["min"] == pytest.approx(0.2)
