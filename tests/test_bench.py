"""The pre-training benchmark: result structure, both models trained, same parameter counts, no SimMIM peer."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from mim.bench.pretrain import bench_pretrain, format_bench

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
# A very small MAE: the "tiny" preset shrunk to 2 blocks of width 48, a 1-block decoder.
TINY = dict(
    model="tiny", image_size=32, patch_size=4, batch=4, steps=1, warmup=1, rounds=2, device="cpu",
    depth=2, embed_dim=48, decoder_dim=32, decoder_depth=1, decoder_heads=2,
)
RUN_KEYS = {"img_per_s", "step_ms_median", "step_ms_min", "step_ms_rounds", "peak_mem_mb", "loss_first", "loss_last",
            "tflops_per_step", "achieved_tflops", "mfu"}


def _check_run(run: dict, rounds: int) -> None:
    assert set(run) == RUN_KEYS
    assert run["img_per_s"] > 0 and run["step_ms_median"] > 0
    assert len(run["step_ms_rounds"]) == rounds
    assert run["peak_mem_mb"] is None  # CPU: not measured
    assert run["tflops_per_step"] > 0 and run["mfu"] is None  # no peak known for a CPU
    assert math.isfinite(run["loss_first"]) and math.isfinite(run["loss_last"])
    assert run["loss_last"] != run["loss_first"], "the optimizer did not change the model"


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="needs transformers (pip install 'mim[bench]')")
def test_mae_against_transformers():
    result = bench_pretrain("mae", **TINY)
    assert result["method"] == "mae" and result["batch"] == 4 and result["amp"] == "fp32"
    assert result["device"].startswith("cpu (")
    assert result["encoder"] == {"embed_dim": 48, "depth": 2, "num_heads": 3}
    assert result["peer_name"] == "transformers.ViTMAEForPreTraining"
    for key in ("ours", "peer"):
        _check_run(result[key], rounds=2)
    params = result["params"]
    assert params["ours"]["trainable"] == params["peer"]["trainable"] > 0
    assert params["ours"]["total"] == params["peer"]["total"]
    # Same weights, batch and noise: the very first loss is the same computation.
    assert result["ours"]["loss_first"] == pytest.approx(result["peer"]["loss_first"], abs=1e-5)
    assert result["ratio"] == pytest.approx(result["ours"]["img_per_s"] / result["peer"]["img_per_s"])
    assert result["ratio_paired"] > 0
    # the same computation counts the same FLOPs (MFU compares like with like); attention is counted for both
    assert result["ours"]["tflops_per_step"] == pytest.approx(result["peer"]["tflops_per_step"], rel=0.02)
    assert any("not measured on cpu" in n for n in result["notes"])
    text = format_bench(result)
    assert "ratio ours/transformers: " in text and text.rstrip().count("\n") >= 5
    assert "ours" in text and "transformers" in text


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="needs transformers (pip install 'mim[bench]')")
def test_param_counts_match_at_default_decoder():
    transformers = pytest.importorskip("transformers")
    from mim.bench.pretrain import hf_vitmae_config
    from mim.bench.timing import count_params
    from mim.methods.mae import build_mae
    from mim.models.vit import ViTSpec, build_vit

    spec = ViTSpec(size="tiny", img_size=32, patch_size=4)
    ours = build_mae(build_vit(spec), mask_ratio=0.75, norm_pix_loss=True, decoder_dim=512, decoder_depth=8,
                     decoder_heads=16, target=None, views=1, mask_count="official")
    config = hf_vitmae_config(spec, 512, 8, 16, 0.75)
    assert config._attn_implementation == "sdpa" and config.layer_norm_eps == 1e-6 and config.norm_pix_loss
    peer = transformers.ViTMAEForPreTraining(config)
    assert count_params(ours) == count_params(peer)


def test_simmim_has_no_peer():
    tiny = {k: v for k, v in TINY.items() if not k.startswith("decoder")}
    result = bench_pretrain("simmim", **tiny)
    assert result["peer"] is None and result["ratio"] is None and result["peer_name"] is None
    assert result["ratio_paired"] is None
    assert result["params"]["peer"] is None and result["decoder"] is None
    assert result["mask_ratio"] == 0.6
    _check_run(result["ours"], rounds=2)
    text = format_bench(result)
    assert "n/a (no peer)" in text and "transformers " not in text.splitlines()[3]
    result["ours"]["peak_mem_mb"] = 12.5  # as on CUDA
    assert "12.5" in format_bench(result)


def test_mae_without_peer_needs_no_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # any import of transformers now fails
    result = bench_pretrain("mae", peer=False, **TINY)
    assert result["peer"] is None and result["ratio"] is None
    _check_run(result["ours"], rounds=2)


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'mim\[bench\]'"):
        bench_pretrain("mae", **TINY)


def test_threads_are_restored_and_reported():
    before = torch.get_num_threads()
    tiny = {k: v for k, v in TINY.items() if not k.startswith("decoder")}
    result = bench_pretrain("simmim", threads=1, **tiny)
    assert result["device"] == "cpu (1 threads)"
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"method": "beit"}, "unknown method"), ({"model": "huge"}, "unknown model"), ({"steps": 0}, "steps")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench_pretrain(**{"method": "mae", **TINY, **kwargs})


def test_teacher_cache_bench_trains_the_same_steps_to_the_same_loss():
    from mim.bench.teacher_cache import bench_teacher_cache, format_cache_bench
    from tests.helpers import ROOT, tiny_overrides

    result = bench_teacher_cache(str(ROOT / "params"), epochs=2, subset=64, overrides=tiny_overrides("img2vec"))
    (_, slow), (_, cached) = result["rows"].items()
    assert result["images"] == 64 and slow["steps"] == cached["steps"] == 8  # 2 epochs of 64 at batch 16
    assert cached["final_loss"] == pytest.approx(slow["final_loss"], rel=0.02)  # float16 targets, same trajectory
    assert "speed-up (total wall-clock)" in format_cache_bench(result)
