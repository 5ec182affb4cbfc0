"""Pre-training throughput benchmark: our MAE / SimMIM against HuggingFace `ViTMAEForPreTraining`.

Both models get the same architecture, the same weights (for MAE the HF initialization is copied
into ours), the same random batch and the same masking noise, and are timed on full training steps
(forward, backward, AdamW step, zero_grad) in the same process. Warm-up steps are untimed; the timed
steps come in rounds that alternate between the two models (ours first on even rounds, the peer
first on odd ones), so that machine noise hits both alike, and the median over rounds is reported;
`ratio_paired` (the median of per-round ratios) and `step_ms_min` help to read runs on a busy machine.

`transformers` is imported only when a peer is built (`method="mae"` with `peer=True`).
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from mim.bench.timing import StepRunner, count_params, device_name, peak_tflops
from mim.engine.optim import build_adamw, param_groups, scaled_lr
from mim.engine.runtime import autocast_dtype, resolve_device
from mim.io import import_optional
from mim.masking import masking_from_noise
from mim.methods.mae import build_mae
from mim.methods.simmim import build_simmim
from mim.models.convert import convert_vitmae_state_dict
from mim.models.vit import VIT_PRESETS, ViTSpec, build_vit

METHODS = ("mae", "simmim")
PEER_NAME = "transformers"
BASE_LR, WEIGHT_DECAY, BETAS = 1.5e-4, 0.05, (0.9, 0.95)
_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


# (width, depth, heads) of the official MAE decoder, also transformers' ViTMAEConfig default: the peer's shape
MAE_PAPER_DECODER = (512, 8, 16)


def _import_transformers() -> Any:
    """The `transformers` module, or a `MissingPackageError` naming the `bench` extra."""
    return import_optional("transformers", "transformers", "bench", "the comparison with HuggingFace ViTMAE",
                           otherwise="or pass peer=False to time ours only")


def hf_vitmae_config(spec: ViTSpec, decoder_dim: int, decoder_depth: int, decoder_heads: int, mask_ratio: float) -> Any:
    """A `transformers.ViTMAEConfig` with the architecture of our MAE (norm-pix loss, SDPA attention).

    Args:
        spec: Our encoder spec (size preset plus overrides, image and patch size).
        decoder_dim: Decoder width; the decoder MLP is 4x wider.
        decoder_depth: Decoder blocks.
        decoder_heads: Decoder attention heads.
        mask_ratio: Fraction of masked patches.

    Returns:
        The config; raises ImportError if transformers is missing.
    """
    transformers = _import_transformers()
    dims = spec.resolved()
    return transformers.ViTMAEConfig(
        hidden_size=dims["embed_dim"],
        num_hidden_layers=dims["depth"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=int(dims["embed_dim"] * spec.mlp_ratio),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=spec.norm_eps,
        image_size=spec.img_size,
        patch_size=spec.patch_size,
        num_channels=spec.in_chans,
        qkv_bias=spec.qkv_bias,
        decoder_hidden_size=decoder_dim,
        decoder_num_hidden_layers=decoder_depth,
        decoder_num_attention_heads=decoder_heads,
        decoder_intermediate_size=int(decoder_dim * spec.mlp_ratio),
        mask_ratio=mask_ratio,
        norm_pix_loss=True,
        attn_implementation="sdpa",
    )


def bench_pretrain(
    method: str,
    model: str,
    image_size: int,
    patch_size: int,
    batch: int,
    steps: int,
    warmup: int,
    device: str = "auto",
    amp: str = "auto",
    compile: bool = False,
    decoder_dim: int = MAE_PAPER_DECODER[0],
    decoder_depth: int = MAE_PAPER_DECODER[1],
    decoder_heads: int = MAE_PAPER_DECODER[2],
    mask_ratio: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    rounds: int = 3,
    depth: int | None = None,
    embed_dim: int | None = None,
    peer: bool = True,
) -> dict[str, Any]:
    """Time full pre-training steps of our method and, for MAE, of HF `ViTMAEForPreTraining`.

    Args:
        method: "mae" (with a transformers peer) or "simmim" (ours only; there is no HF SimMIM).
        model: Encoder size preset ("tiny", "small", "base", "large").
        image_size: Square image side in pixels.
        patch_size: Patch side in pixels.
        batch: Images per step.
        steps: Timed steps per model in each round.
        warmup: Untimed steps per model before timing.
        device: "auto", "cuda" or "cpu".
        amp: "auto" (bf16 on CUDA, none on CPU), "bf16", "fp16" or "off"; the same for both models.
        compile: `torch.compile` ours and the peer.
        decoder_dim: MAE decoder width (the decoder MLP is 4x wider).
        decoder_depth: MAE decoder blocks.
        decoder_heads: MAE decoder attention heads.
        mask_ratio: Masked fraction; None for the method default (MAE 0.75, SimMIM 0.6).
        seed: Seed for the weights, the batch and the masking noise.
        threads: CPU threads for the run (restored afterwards); None keeps the current setting.
        rounds: Alternating timing rounds; the reported step time is the median over rounds.
        depth: Encoder depth override (both models), e.g. to shrink a test.
        embed_dim: Encoder width override (both models).
        peer: Build the transformers peer for MAE; False times ours only.

    Returns:
        A dict with the configuration, `device`, `amp`, `params` (`ours`/`peer` total and trainable
        counts), `ours` and `peer` (`img_per_s` from the median step, `step_ms_median`, `step_ms_min`,
        `step_ms_rounds`, `peak_mem_mb`, `loss_first`, `loss_last`; `peer` is None without one), `ratio`
        (ours img/s over peer img/s, None without a peer), `ratio_paired` (median over rounds of the peer's
        step time over ours in the same round: robust to load that changes between rounds) and `notes`.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if model not in VIT_PRESETS:
        raise ValueError(f"unknown model size {model!r}; choose from {tuple(VIT_PRESETS)}")
    for name, value in (("batch", batch), ("steps", steps), ("rounds", rounds)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(
            method, model, image_size, patch_size, batch, steps, warmup, device, amp, compile, decoder_dim,
            decoder_depth, decoder_heads, mask_ratio, seed, rounds, depth, embed_dim, peer,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _bench(
    method: str, model: str, image_size: int, patch_size: int, batch: int, steps: int, warmup: int, device: str,
    amp: str, compile: bool, decoder_dim: int, decoder_depth: int, decoder_heads: int, mask_ratio: float | None,
    seed: int, rounds: int, depth: int | None, embed_dim: int | None, peer: bool,
) -> dict[str, Any]:
    dev = resolve_device(device, param="--device")
    dtype = autocast_dtype(amp, dev)
    spec = ViTSpec(size=model, img_size=image_size, patch_size=patch_size, depth=depth, embed_dim=embed_dim)
    notes: list[str] = []
    with_peer = method == "mae" and peer
    hf_config = None
    if method == "mae":
        ratio = 0.75 if mask_ratio is None else mask_ratio
        if with_peer:  # before building anything: fail fast without transformers
            hf_config = hf_vitmae_config(spec, decoder_dim, decoder_depth, decoder_heads, ratio)
        torch.manual_seed(seed)
        ours = build_mae(
            build_vit(spec), mask_ratio=ratio, norm_pix_loss=True,
            decoder_dim=decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads, target=None, views=1,
            mask_count="official",
        )
    else:
        ratio = 0.6 if mask_ratio is None else mask_ratio
        torch.manual_seed(seed)
        ours = build_simmim(build_vit(spec), mask_ratio=ratio, mask_unit_size=2 * spec.patch_size, target=None,
                            views=1)  # 2 patches: 8 px at patch 4, the paper's 32 px at patch 16
        notes.append("simmim: no transformers peer (HF has no SimMIM pre-training model); ours only")

    hf = None
    if hf_config is not None:
        transformers = _import_transformers()
        torch.manual_seed(seed)
        hf = transformers.ViTMAEForPreTraining(hf_config)
        ours.load_state_dict(convert_vitmae_state_dict(hf.state_dict()), strict=True)
        notes.append("ours starts from the peer's initial weights (same computation, same first loss)")

    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, spec.in_chans, image_size, image_size, generator=gen).to(dev)
    num_patches = ours.encoder.num_patches
    noise = torch.rand(batch, num_patches, generator=gen).to(dev)

    ours.to(dev).train()
    lr = scaled_lr(BASE_LR, batch)
    ours_opt = build_adamw(ours, lr=lr, weight_decay=WEIGHT_DECAY, betas=BETAS, fused="auto")
    ours_module = torch.compile(ours) if compile else ours
    if method == "mae":
        mae_mask = masking_from_noise(noise, ratio, ours.mask_count)  # transformers' count: the same masks
        ours_forward = lambda m: m({"images": images, "mask": mae_mask})["loss"]
    else:
        simmim_mask = ours.sample_masks(batch, torch.Generator().manual_seed(seed + 1)).to(dev)
        ours_forward = lambda m: m({"images": images, "mask": simmim_mask})["loss"]
    runners = [StepRunner("ours", ours_module, ours_opt, ours_forward, dev, dtype)]

    if hf is not None:
        hf.to(dev).train()
        hf_opt = torch.optim.AdamW(
            param_groups(hf, WEIGHT_DECAY), lr=lr, betas=BETAS, fused=True if dev.type == "cuda" else None
        )
        hf_module = torch.compile(hf) if compile else hf
        hf_forward = lambda m: m(pixel_values=images, noise=noise).loss
        runners.append(StepRunner("peer", hf_module, hf_opt, hf_forward, dev, dtype))

    flops = {runner.name: runner.count_flops() for runner in runners}
    if warmup:
        for runner in runners:
            runner.run(warmup, timed=False)
    for r in range(rounds):  # alternate who goes first so that drifts hit both models alike
        for runner in runners if r % 2 == 0 else runners[::-1]:
            runner.run(steps, timed=True)

    if compile and not warmup:
        notes.append("compile with warmup=0: compilation time is inside the first timed round")
    if dev.type != "cuda":
        notes.append(f"peak memory not measured on {dev.type}")
    for runner in runners:
        spread = max(runner.step_s) / min(runner.step_s)
        if spread > 1.25:
            notes.append(
                f"noisy timings: {runner.name} rounds vary {spread:.2f}x (other load on the machine?); "
                "compare step_ms_min and ratio_paired, or add rounds"
            )
    result_ours = runners[0].summary(batch)
    result_peer = runners[1].summary(batch) if len(runners) > 1 else None
    peak = peak_tflops(device_name(dev)) if dev.type == "cuda" else None
    for runner, result in zip(runners, (result_ours, result_peer), strict=False):
        result["tflops_per_step"] = flops[runner.name] / 1e12
        achieved = flops[runner.name] / (result["step_ms_median"] / 1e3)
        result["achieved_tflops"] = achieved / 1e12
        result["mfu"] = achieved / (peak * 1e12) if peak else None
    return {
        "method": method,
        "model": model,
        "image_size": image_size,
        "patch_size": patch_size,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "rounds": rounds,
        "encoder": spec.resolved(),
        "decoder": {"dim": decoder_dim, "depth": decoder_depth, "heads": decoder_heads} if method == "mae" else None,
        "mask_ratio": ratio,
        "device": device_name(dev),
        "amp": _DTYPE_NAMES[dtype],
        "compile": compile,
        "peer_name": f"{PEER_NAME}.ViTMAEForPreTraining" if hf is not None else None,
        "params": {"ours": count_params(ours), "peer": count_params(hf) if hf is not None else None},
        "ours": result_ours,
        "peer": result_peer,
        "ratio": result_ours["img_per_s"] / result_peer["img_per_s"] if result_peer else None,
        "ratio_paired": (
            statistics.median(p / o for o, p in zip(runners[0].step_s, runners[1].step_s, strict=True))
            if result_peer else None
        ),
        "notes": notes,
    }


def format_bench(result: dict[str, Any]) -> str:
    """A small aligned table of a `bench_pretrain` result plus the ours/peer ratio line."""
    enc = result["encoder"]
    head = (
        f"{result['method']} vit-{result['model']} ({enc['embed_dim']}d x {enc['depth']})  "
        f"image {result['image_size']} patch {result['patch_size']}  batch {result['batch']}"
    )
    if result.get("decoder"):
        d = result["decoder"]
        head += f"  decoder {d['dim']}d x {d['depth']} ({d['heads']} heads)"
    head += f"\ndevice {result['device']}  amp {result['amp']}  compile {result['compile']}"
    head += f"  steps {result['rounds']} x {result['steps']} (+{result['warmup']} warmup)"

    def mem(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    rows = [("model", "params", "trainable", "img/s", "step ms", "min ms", "peak MB", "TFLOP/s", "MFU",
             "loss first->last")]
    for key, label in (("ours", "ours"), ("peer", PEER_NAME)):
        r, p = result.get(key), result["params"].get(key)
        if r is None:
            continue
        rows.append((
            label, f"{p['total']:,}", f"{p['trainable']:,}", f"{r['img_per_s']:.1f}", f"{r['step_ms_median']:.2f}",
            f"{r['step_ms_min']:.2f}", mem(r["peak_mem_mb"]), f"{r['achieved_tflops']:.2f}",
            "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%", f"{r['loss_first']:.4f}->{r['loss_last']:.4f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for row in rows:
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
    ratio = result.get("ratio")
    if ratio is None:
        lines += ["", f"ratio ours/{PEER_NAME}: n/a (no peer)"]
    else:
        paired = result.get("ratio_paired")
        extra = f"  (paired by round: {paired:.2f}x)" if paired is not None else ""
        lines += ["", f"ratio ours/{PEER_NAME}: {ratio:.2f}x{extra}"]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)
