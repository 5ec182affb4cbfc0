"""k-NN and linear probe: exact on separable data, agree with a brute-force reference."""

import pytest
import torch
import torch.nn.functional as F

from mim.data import make_synthetic
from mim.evaluation import evaluate_encoder, knn_accuracy, knn_predict, linear_probe
from mim.evaluation.evaluate import evaluate_pixels
from mim.models.vit import ViTSpec, build_vit
from mim.params import DataParams, EvalParams
from mim.params.bind.data import augment
from mim.params.bind.evaluation import probe_config


def _clusters(n_per: int, dim: int = 16, classes: int = 4, seed: int = 0, spread: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per)
    return centers[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_knn_is_perfect_on_separated_clusters():
    x, y = _clusters(50)
    xt, yt = _clusters(20, seed=0)
    assert knn_accuracy(x, y, xt, yt, k=5) == 1.0


def test_knn_matches_brute_force_weighted_vote():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(200, 8, generator=g), torch.randint(0, 5, (200,), generator=g)
    xt = torch.randn(50, 8, generator=g)
    k, t = 7, 0.1
    sims = F.normalize(xt, dim=1) @ F.normalize(x, dim=1).T
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(50, 5).scatter_add_(1, y[idx], (top / t).exp())
    assert torch.equal(knn_predict(x, y, xt, k=k, temperature=t, num_classes=5), votes.argmax(1))


def test_linear_probe_learns_a_linear_rule_and_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    res = linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=30, batch_size=128, lr=1e-2)
    assert res["top1"] > 0.95
    noise_labels = torch.randint(0, 2, (1000,), generator=g)
    res = linear_probe(x[:800], noise_labels[:800], x[800:], noise_labels[800:], epochs=10, batch_size=128)
    assert res["top1"] < 0.65


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("lars", 5.0)])  # LARS steps are lr * 1e-3 * |w|
def test_linear_probe_with_sgd_and_lars(optimizer, lr):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    res = linear_probe(x[:800], y[:800], x[800:], y[800:], epochs=30, batch_size=128, lr=lr, optimizer=optimizer)
    assert res["top1"] > 0.9
    with pytest.raises(ValueError, match="unknown linear-probe optimizer 'adam'"):
        linear_probe(x, y, x, y, epochs=1, optimizer="adam")


def test_lars_scales_weight_steps_by_the_trust_ratio():
    from mim.evaluation.lars import LARS

    g = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, generator=g))
    b = torch.nn.Parameter(torch.randn(4, generator=g))
    w.grad, b.grad = torch.randn(4, 3, generator=g), torch.randn(4, generator=g)
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, trust_coefficient=0.01)
    opt.step()
    update = w.grad + 0.1 * w0
    expected = w0 - 0.5 * 0.01 * w0.norm() / update.norm() * update
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    assert (w.detach() - w0).norm() == pytest.approx(0.5 * 0.01 * float(w0.norm()), rel=1e-5)  # step = lr*eta*|w|
    assert torch.allclose(b.detach(), b0 - 0.5 * b.grad, atol=1e-6)  # 1-d: plain SGD, no decay
    with pytest.raises(ValueError, match="LARS needs lr > 0"):
        LARS([w], lr=0.0)


def test_evaluate_encoder_and_pixel_baseline_on_synthetic():
    train, test = make_synthetic(200, size=16, seed=0), make_synthetic(80, size=16, seed=1)
    params = EvalParams(linear={"epochs": 20, "batch_size": 64, "lr": 1e-2}, batch_size=64)
    data = DataParams(source="synthetic", image_size=16)
    torch.manual_seed(0)
    enc = build_vit(ViTSpec(img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2))
    m = evaluate_encoder(enc, train, test, augment(data), probe_config(params))
    assert m["feature_dim"] == 32
    assert 0 <= m["knn_top1"] <= 100 and 0 <= m["linear_top1"] <= 100
    px = evaluate_pixels(train, test, augment(data), probe_config(params))
    assert px["knn_top1"] > 50  # the synthetic classes are visibly different patterns (chance: 25 %)


def test_knn_rejects_empty_train_set():
    with pytest.raises(ValueError, match="at least one"):
        knn_predict(torch.empty(0, 4), torch.empty(0, dtype=torch.long), torch.randn(2, 4))
