"""Tokenizer benchmark: our centroid tokenizer (faiss k-means, exact faiss assignment) against scikit-learn's
`MiniBatchKMeans`, same patch vectors, same k, same number of iterations (passes over the data), same seed,
in one process. Inertia (mean squared distance to the assigned centroid) is computed the same exact way for
both codebooks, so the quality comparison does not depend on either library's bookkeeping.

`sklearn` is imported only here (a dev dependency).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from mim.data import load_dataset
from mim.io import import_optional
from mim.params import DataParams
from mim.params.bind.data import augment
from mim.rng import generator_for
from mim.targets.centroids import CentroidTokenizer, TokenizerInfo, sample_patch_vectors


def _inertia(x: torch.Tensor, tok: CentroidTokenizer) -> float:
    return float((tok.decode(tok.assign(x)) - x).pow(2).sum(dim=1).mean())


def _best_of(n: int, fn: Any) -> float:
    """The fastest of `n` timed calls (after one untimed warm-up), in seconds."""
    fn()
    times = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def bench_tokenizer(*, k: int = 1024, num_patches: int = 200_000, patch_size: int = 4, iters: int = 20,
                    seed: int = 0, source: str = "fashion-mnist", image_size: int = 32) -> dict[str, Any]:
    """Build and assignment times, assignment patches/s and inertia for ours and MiniBatchKMeans."""
    MiniBatchKMeans = import_optional("sklearn.cluster", "scikit-learn", "bench",
                                      "the tokenizer benchmark (against MiniBatchKMeans)").MiniBatchKMeans
    data = DataParams(source=source, image_size=image_size)
    images = load_dataset(source, data.train_split, size=image_size).images
    x = sample_patch_vectors(images, augment(data), patch_size, num_patches, generator_for(seed, "bench"))
    channels = x.shape[1] // patch_size**2
    result: dict[str, Any] = {"k": k, "num_patches": len(x), "dim": x.shape[1], "iters": iters,
                              "threads": torch.get_num_threads()}

    began = time.perf_counter()
    ours = CentroidTokenizer.build(x, k, iters, seed, patch_size=patch_size, channels=channels, verbose=False)
    build_s = time.perf_counter() - began
    result["ours"] = {"build_s": build_s, "assign_per_s": len(x) / _best_of(3, lambda: ours.assign(x)),
                      "inertia": _inertia(x, ours)}

    xs = x.numpy().astype(np.float32)
    began = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=k, max_iter=iters, n_init=1, random_state=seed, batch_size=4096,
                         max_no_improvement=None, tol=0.0).fit(xs)
    build_s = time.perf_counter() - began
    assign_s = _best_of(3, lambda: km.predict(xs))
    peer = CentroidTokenizer(torch.from_numpy(km.cluster_centers_.astype(np.float32)),
                             TokenizerInfo(k, patch_size, channels, iters, seed, len(x), build_s, float("nan")))
    result["sklearn"] = {"build_s": build_s, "assign_per_s": len(x) / assign_s,
                         "inertia": _inertia(x, peer)}
    result["build_speedup"] = result["sklearn"]["build_s"] / result["ours"]["build_s"]
    result["assign_speedup"] = result["ours"]["assign_per_s"] / result["sklearn"]["assign_per_s"]
    result["inertia_ratio"] = result["ours"]["inertia"] / result["sklearn"]["inertia"]
    return result


def format_tokenizer_bench(r: dict[str, Any]) -> str:
    lines = [f"k={r['k']}, {r['num_patches']} patch vectors of {r['dim']} dims, {r['iters']} iterations, "
             f"{r['threads']} threads",
             f"{'':<26} {'build s':>8} {'assign patches/s':>17} {'inertia':>9}"]
    for name, label in (("ours", "ours (faiss k-means)"), ("sklearn", "sklearn MiniBatchKMeans")):
        m = r[name]
        lines.append(f"{label:<26} {m['build_s']:>8.2f} {m['assign_per_s']:>17,.0f} {m['inertia']:>9.4f}")
    lines.append(f"ours vs sklearn: build {r['build_speedup']:.2f}x faster, assignment {r['assign_speedup']:.2f}x "
                 f"faster, inertia ratio {r['inertia_ratio']:.3f} (<= 1 is as good or better)")
    return "\n".join(lines)
