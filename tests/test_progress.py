"""Progress of long loops (`mim.progress`): plain lines off a terminal (rate limited, with ETA, the last one always),
a bar on one, silence under `-q` and off rank 0; and each long loop of the library reports through it."""

from __future__ import annotations

import io
import logging
import re

import numpy as np
import pytest
import torch

import mim.progress
from mim.data import BatchAugment, make_synthetic
from mim.data.folder import load_image_folder
from mim.evaluation import extract_features, linear_probe
from mim.models.vit import ViTSpec, build_vit
from mim.progress import Progress, track
from mim.targets.centroids import CentroidTokenizer, sample_patch_vectors
from mim.targets.feature_cache import FeatureCache

LINE = re.compile(r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\S+) \(\d+%\) \| ")


@pytest.fixture(autouse=True)
def plain_lines(monkeypatch, caplog):
    """As under DVC or Prefect: stderr is no terminal (also when pytest runs with -s), INFO enabled."""
    monkeypatch.setattr(mim.progress, "_isatty", lambda stream: False)
    monkeypatch.delenv("RANK", raising=False)
    caplog.set_level(logging.INFO, logger="mim")


def lines(caplog, desc: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{desc}: ")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_rate_limited_with_done_total_and_eta_and_the_last_always_appears(caplog):
    clock = FakeClock()
    with Progress(1000, "work", "images", logger="mim.test", clock=clock) as progress:
        for _ in range(100):
            clock.now += 1.3  # 10 images every 1.3 s: a line is due every 8th update (10.4 s)
            progress.update(10, info=lambda: {"loss": 0.25})
    shown = lines(caplog, "work")
    assert len(shown) == 12 + 1  # 130 s at most one line per 10 s, plus the last
    assert shown[0] == "work: 80/1000 images (8%) | 7.69 images/s | elapsed 00:10 | eta 01:59 | loss 0.25"
    assert all("eta " in s for s in shown[:-1])
    assert shown[-1].startswith("work: 1000/1000 images (100%) | 7.69 images/s | elapsed 02:10")
    assert "eta" not in shown[-1]  # nothing left


def test_a_fast_loop_logs_only_its_last_line_with_final_values(caplog):
    clock = FakeClock()
    progress = Progress(5, "probe", "steps", logger="mim.test", clock=clock)
    for i in range(5):
        progress.update(info={"epoch": f"{i + 1}/5"})
    assert lines(caplog, "probe") == []  # control: nothing before the last line when under 10 s
    clock.now += 2.0
    progress.close(top1=0.5)
    progress.close()  # idempotent
    assert lines(caplog, "probe") == ["probe: 5/5 steps (100%) | 2.5 steps/s | elapsed 00:02 | epoch 5/5 | top1 0.5"]


def test_a_resumed_count_and_an_unknown_total(caplog):
    clock = FakeClock()
    with Progress(100, "fine-tune", "steps", logger="mim.test", initial=60, clock=clock) as progress:
        clock.now += 12.0
        progress.update(20)  # 20 steps in 12 s: 20 left take 12 s more
        clock.now += 12.0
        progress.update(20)
    assert lines(caplog, "fine-tune")[0].startswith("fine-tune: 80/100 steps (80%) | 1.67 steps/s | elapsed 00:12 | "
                                                    "eta 00:12")
    assert list(track(iter(range(3)), desc="stream", logger="mim.test")) == [0, 1, 2]
    assert lines(caplog, "stream")[0].startswith("stream: 3 it | ")


def test_quiet_other_ranks_and_a_failed_loop_log_nothing(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger="mim")  # `mim -q`
    with Progress(3, "quiet", logger="mim.test") as progress:
        progress.update(3)
    caplog.set_level(logging.INFO, logger="mim")
    monkeypatch.setenv("RANK", "1")  # torchrun's second process
    with Progress(3, "rank1", logger="mim.test") as progress:
        progress.update(3)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(KeyError), Progress(3, "failed", logger="mim.test") as progress:
        progress.update(1)
        raise KeyError("x")
    with Progress(3, "rank0", logger="mim.test") as progress:  # control: the same loop shows on rank 0
        progress.update(3)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["rank0"]


def test_a_terminal_gets_a_bar_redrawn_in_place_and_no_log_lines(caplog):
    clock, stream = FakeClock(), io.StringIO()
    with Progress(40, "bar", "steps", logger="mim.test", bar=True, clock=clock, stream=stream) as progress:
        for _ in range(40):
            clock.now += 0.125  # exact in binary: a redraw is due every 2nd update
            progress.update(info={"loss": 1.5})
    text = stream.getvalue()
    assert text.startswith("\rbar: ") and text.endswith("\n") and text.count("\n") == 1
    assert text.count("\r") == 20 + 1  # redrawn at most every 0.2 s, plus the last
    assert "[####################]" in text.split("\r")[-1] and "40/40 steps" in text
    assert lines(caplog, "bar") == []


# ---------------------------------------------------------------- each long loop reports


def test_image_folder_decoding_reports_every_image(tmp_path, caplog):
    from PIL import Image

    for i in range(5):
        Image.fromarray(np.full((6, 6, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    load_image_folder(str(tmp_path), size=4)
    assert lines(caplog, f"decode {tmp_path}")[-1].startswith(f"decode {tmp_path}: 5/5 images (100%)")


def test_feature_extraction_reports_its_images(caplog):
    images = make_synthetic(10, size=16, seed=0).images
    encoder = build_vit(ViTSpec(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2))
    feats = extract_features(encoder, images, BatchAugment(out_size=16), batch_size=4, desc="features (train)")
    assert feats.shape == (10, 16)
    assert [LINE.match(s).group("done", "total", "unit") for s in lines(caplog, "features (train)")] == [
        ("10", "10", "images")]


def test_linear_probe_reports_epoch_loss_and_accuracy(caplog):
    torch.manual_seed(0)
    x, y = torch.randn(40, 8), torch.arange(40) % 2
    result = linear_probe(x, y, x, y, epochs=3, batch_size=16)
    (last,) = lines(caplog, "linear probe")
    assert last.startswith("linear probe: 9/9 steps (100%)")  # 3 epochs of 3 steps
    assert "epoch 3/3" in last and re.search(r"loss \d", last) and f"top1 {result['top1']:.4g}" in last


def test_tokenizer_reports_patches_and_each_k_means_pass_with_the_centroids_of_one_faiss_call(caplog):
    import faiss

    images = make_synthetic(12, size=8, seed=0).images
    patches = sample_patch_vectors(images, BatchAugment(out_size=8), 4, 40, torch.Generator().manual_seed(0))
    assert lines(caplog, "patches")[-1].startswith("patches: 10/10 images")
    tok = CentroidTokenizer.build(patches, 8, 5, seed=3, patch_size=4, channels=3)
    (last,) = lines(caplog, "k-means (k=8, 40 vectors)")
    assert last.startswith("k-means (k=8, 40 vectors): 5/5 passes (100%)") and f"inertia {tok.info.inertia:.4g}" in last
    x = np.ascontiguousarray(patches.numpy())
    one = faiss.Kmeans(x.shape[1], 8, niter=5, seed=3, verbose=False, max_points_per_centroid=256)
    one.train(x)
    assert np.array_equal(tok.centroids.numpy(), one.centroids)  # one pass at a time changes nothing
    assert tok.info.inertia == pytest.approx(float(one.obj[-1]) / len(x))


def test_teacher_feature_cache_reports_its_images(caplog):
    images = make_synthetic(6, size=8, seed=0).images
    FeatureCache.build(lambda x: x.flatten(2).transpose(1, 2), images, BatchAugment(out_size=8, scale=(1.0, 1.0)),
                       device=torch.device("cpu"), batch_size=4)
    assert lines(caplog, "teacher features (cache)")[-1].startswith("teacher features (cache): 6/6 images (100%)")
