"""A non-parametric tokenizer (CCViT): k-means centroids of raw patch pixels; a token is its nearest centroid.

Patch vectors are raw pixels in [0, 1], flattened in (c, py, px) order (`patch_vectors`). `build` runs
faiss k-means (a GPU index when faiss has one), `assign` is an exact nearest-centroid search (a faiss flat index
on the CPU, a fused matmul + argmin on a GPU)
and `decode` is a table lookup. Saved as `centroids.npy` plus `tokenizer.json` (k, patch size, channels,
iterations, data digest, build time, inertia).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from mim.io import atomic_write, load_npy, read_json_object, write_text
from mim.progress import Progress
from mim.targets.pixels import patch_vectors

log = logging.getLogger("mim.tokenizer")
FORMAT = "mim-centroid-tokenizer/1"


@dataclass
class TokenizerInfo:
    k: int
    patch_size: int
    channels: int
    iterations: int
    seed: int
    num_vectors: int
    build_s: float
    inertia: float  # mean squared distance of the training vectors to their centroid
    data_digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class CentroidTokenizer:
    """`centroids` [K, C*p*p] float32; `assign(patches) -> ids`, `decode(ids) -> patches`."""

    def check_fits(self, patch_size: int, channels: int) -> None:
        """A clear error when this codebook was built for other patches than the model's."""
        info = self.info
        if (info.patch_size, info.channels) != (patch_size, channels):
            raise ValueError(f"tokenizer built for {info.patch_size}-px patches with {info.channels} channels, but the "
                             f"model uses {patch_size}-px patches with {channels} channels: rebuild it with "
                             f"tokenizer.patch_size={patch_size} (params/tokenizer.yaml) or change model.patch_size")

    def __init__(self, centroids: Tensor, info: TokenizerInfo) -> None:
        dim = info.channels * info.patch_size**2
        if centroids.ndim != 2 or centroids.shape != (info.k, dim):
            raise ValueError(f"centroids of shape {list(centroids.shape)} do not match k={info.k}, "
                             f"{info.channels} channels, patch {info.patch_size} (expected [{info.k}, {dim}])")
        self.centroids = centroids.float().contiguous()
        self.info = info

    @property
    def k(self) -> int:
        return self.info.k

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(cls, patches: Tensor, k: int, iters: int = 20, seed: int = 0, *, patch_size: int, channels: int,
              data_digest: str = "", verbose: bool = True) -> CentroidTokenizer:
        """k-means (faiss, L2) on `patches` [M, C*p*p] in [0, 1]; `seed` fixes the initialization. Run one
        faiss pass at a time, each starting from the last one's centroids (the same centroids as one call with
        `iters` passes, tested), so `verbose` shows each pass's progress and objective."""
        import faiss

        x = np.ascontiguousarray(patches.detach().cpu().numpy(), dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != channels * patch_size**2:
            raise ValueError(f"patches must be [M, {channels * patch_size**2}], got {list(x.shape)}")
        if len(x) < k:
            raise ValueError(f"k-means with k={k} needs at least {k} patch vectors, got {len(x)}")
        if iters < 1:
            raise ValueError(f"k-means needs at least one iteration, got {iters}")
        began = time.perf_counter()
        gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        centroids, objective = None, float("nan")
        with Progress(iters, f"k-means (k={k}, {len(x)} vectors)", "passes", logger=log,
                      enabled=None if verbose else False) as progress:
            for i in range(iters):
                km = faiss.Kmeans(x.shape[1], k, niter=1, seed=seed, verbose=False, gpu=gpu,
                                  max_points_per_centroid=max(256, -(-len(x) // k)),  # use every vector given
                                  min_points_per_centroid=39 if i == 0 else 1)  # faiss's few-points warning once
                km.train(x, init_centroids=centroids)
                centroids, objective = km.centroids, float(km.obj[-1]) if len(km.obj) else float("nan")
                progress.update(info={"inertia": objective / len(x)})
        build_s = time.perf_counter() - began
        inertia = objective / len(x)
        info = TokenizerInfo(k=k, patch_size=patch_size, channels=channels, iterations=iters, seed=seed,
                             num_vectors=len(x), build_s=build_s, inertia=inertia, data_digest=data_digest)
        return cls(torch.from_numpy(centroids.copy()), info)

    # -- using ---------------------------------------------------------------------------------
    @torch.no_grad()
    def assign(self, patches: Tensor) -> Tensor:
        """[..., C*p*p] -> [...] long ids of the nearest centroid (exact, L2), on the patches' device."""
        flat = patches.reshape(-1, self.dim)
        return nearest_centroid(flat, self.centroids.to(flat.device)).reshape(patches.shape[:-1])

    def decode(self, ids: Tensor) -> Tensor:
        """[...] ids -> [..., C*p*p] centroid pixels, on the ids' device."""
        return self.centroids.to(ids.device)[ids]

    # -- files ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        centroids = self.centroids.numpy()
        atomic_write(str(folder / "centroids.npy"), lambda f: np.save(f, centroids, allow_pickle=False))
        write_text(str(folder / "tokenizer.json"), json.dumps({"format": FORMAT, **asdict(self.info)}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> CentroidTokenizer:
        folder = Path(folder)
        meta_path = folder / "tokenizer.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no centroid tokenizer there (tokenizer.json missing); "
                                    "build it with `mim tokenizer` (or `dvc repro tokenizer`)")
        rebuild = "rebuild it with `dvc repro tokenizer` (or `mim tokenizer`)"
        meta = read_json_object(meta_path, rebuild)
        if meta.pop("format", None) != FORMAT:
            raise ValueError(f"{meta_path}: not a mim centroid tokenizer; {rebuild}")
        centroids = torch.from_numpy(load_npy(folder / "centroids.npy", rebuild))
        return cls(centroids, TokenizerInfo(**meta))


def nearest_centroid(x: Tensor, centroids: Tensor, chunk: int = 4096,
                     backend: Literal["auto", "faiss", "matmul"] = "auto") -> Tensor:
    """[M, D] -> [M] index of the nearest row of `centroids` [K, D] (exact L2). On the CPU a faiss flat index
    (1.1-1.3x scikit-learn's `pairwise_distances_argmin`, 2x a torch matmul + argmin on two cores); on a GPU
    argmin ||c||^2 - 2 x.c, one fused addmm per chunk of rows into a reused buffer (||x||^2 is the same for every
    centroid). `backend` auto picks by device."""
    if backend == "faiss" or (backend == "auto" and centroids.device.type == "cpu"):
        import faiss

        c = centroids.float().contiguous().numpy()
        index = faiss.IndexFlatL2(c.shape[1])
        index.add(c)
        _, ids = index.search(x.float().contiguous().numpy(), 1)
        return torch.from_numpy(ids[:, 0]).long()
    c = centroids.float()
    c_sq, c_t = (c * c).sum(dim=1), c.T.contiguous()  # [K], [D, K]
    out = torch.empty(len(x), dtype=torch.long, device=c.device)
    scores = torch.empty(min(chunk, len(x)), len(c), device=c.device)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        dist = torch.addmm(c_sq, part, c_t, alpha=-2, out=scores[: len(part)])  # [chunk, K]
        torch.argmin(dist, dim=1, out=out[start : start + len(part)])
    return out


def codebook_usage(ids: Tensor, k: int) -> dict[str, float]:
    """How the codebook is used on a set of assignments: fraction of centroids used, perplexity of the
    assignment distribution (k when uniform, 1 when one centroid takes everything)."""
    counts = torch.bincount(ids.flatten().cpu(), minlength=k).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).double().mean()), "perplexity": float(entropy.exp())}


def sample_patch_vectors(images: Tensor, transform: Any, patch_size: int, max_vectors: int,
                         generator: torch.Generator, batch_size: int = 1024) -> Tensor:
    """Patch vectors [M <= max_vectors, C*p*p] in [0, 1] from randomly chosen whole images (seeded).

    `images` is a uint8 [N, C, H, W] data set, or shards' lazily decoded `images` (only the sampled images are
    read); `transform` a `BatchAugment` (its `eval` resize and `denormalize`), so the patches are exactly what the
    model sees before normalization.
    """
    probe = transform.eval(images[:1])
    per_image = (probe.shape[-2] // patch_size) * (probe.shape[-1] // patch_size)
    count = min(len(images), -(-max_vectors // per_image))
    order = torch.randperm(len(images), generator=generator)[:count]
    out = []
    with Progress(count, "patches", "images", logger=log) as progress:
        for start in range(0, count, batch_size):
            x = transform.eval(images[order[start : start + batch_size]])
            out.append(patch_vectors(transform.denormalize(x).clamp(0, 1), patch_size).flatten(0, 1))
            progress.update(len(x))
    return torch.cat(out)[:max_vectors]
