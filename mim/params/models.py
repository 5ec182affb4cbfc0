"""Pydantic models of the data and of pre-training recipes (model, optimizer, schedule, training, and the method
from `methods.py`), the single source of parameter truth with `targets.py` (tokenizer, teacher, diversity) and
`evaluation.py`.

Defaults are sized for the embedded default: Fashion-MNIST on a CPU.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from mim.params.base import RUN_CONTROL, Fraction, PositiveInt, Strict
from mim.params.methods import MaeParams, MethodParams


class WarmStartParams(Strict):
    """What every encoder architecture's model params share: the weights a run starts from."""

    init_from: str | None = Field(
        None, min_length=1,
        description="start pre-training (step 0, fresh optimizer) from these weights: mim's model.safetensors "
                    "(every part) or encoder.safetensors, a HF ViTMAEForPreTraining folder, an official MAE .pth "
                    "checkpoint, or hf-hub:org/name; a path or fsspec URL. Its digest is part of the run's "
                    "identity; a resumed run continues from its checkpoint instead (docs/weights.md)")


class ViTParams(WarmStartParams):
    arch: Literal["vit"] = "vit"
    size: Literal["micro", "tiny", "small", "base", "large"] = Field(
        "micro", description="width/depth/heads preset: micro 128/4/4 (the CPU demo), tiny 192/12/3, small 384/12/6, "
        "base 768/12/12, large 1024/24/16")
    patch_size: PositiveInt = Field(4, description="patch side in pixels (16 at 224 px)")
    embed_dim: PositiveInt | None = Field(None, description="override the preset's width")
    depth: PositiveInt | None = Field(None, description="override the preset's number of blocks")
    num_heads: PositiveInt | None = Field(None, description="override the preset's attention heads")
    mlp_ratio: Annotated[float, Field(gt=0)] = 4.0
    qkv_bias: bool = True
    norm_eps: Annotated[float, Field(gt=0)] = 1e-6
    drop_path: Fraction = Field(0.0, description="stochastic depth rate (rises linearly to this over the blocks)")
    pos_embed: Literal["sincos", "learn"] = "sincos"


class CnnParams(WarmStartParams):
    """A timm CNN encoder (CIM's enhancer): any ResNet depth, optionally slimmer, dilated or fed larger images."""

    arch: Literal["cnn"] = "cnn"
    name: str = Field("resnet18", description="a timm CNN name (resnet10t, resnet18, resnet50, ...)")
    patch_size: PositiveInt = Field(4, description="the token grid per-token heads and tokenizers use")
    input_size: PositiveInt | None = Field(None, description="resize images to this before the stem (None = as is)")
    output_stride: Literal[8, 16, 32] = Field(32, description="8/16 dilate the last stages (bigger final maps)")
    kwargs: dict[str, Any] = Field({}, description="more timm.create_model arguments, e.g. channels, stem_width "
                                   "(architecture shapes only: mim.models.timm_args.TIMM_KWARGS)")
    drop_path: Fraction = 0.0


class HierParams(WarmStartParams):
    """MixMIM's hierarchical encoder: Swin-like stages of window attention, 2x2 patch merging between them."""

    arch: Literal["hier"] = "hier"
    size: Literal["micro", "base"] = Field("micro", description="micro: 64 wide, stages [1, 2] (28 px, patch 2); "
                                           "base: MixMIM-B (128, [2, 2, 18, 2], 224 px, patch 4)")
    patch_size: PositiveInt = Field(2, description="the patch embedding's stride; the last grid's is "
                                    "patch_size * 2^(stages - 1)")
    embed_dim: PositiveInt | None = None
    depths: tuple[PositiveInt, ...] | None = None
    num_heads: tuple[PositiveInt, ...] | None = None
    window_sizes: tuple[PositiveInt, ...] | None = Field(None, description="tokens per window side, per stage")
    mlp_ratio: Annotated[float, Field(gt=0)] = 4.0
    drop_path: Fraction = 0.0
    rel_pos_bias: bool = Field(True, description="a learned relative position bias in every block's window "
                               "attention ((2W-1)^2 x heads, Swin's and MixMIM-B's); false = absolute positions only")


def _arch(value: Any) -> str:
    return value.get("arch", "vit") if isinstance(value, dict) else getattr(value, "arch", "vit")


ModelParams = Annotated[Annotated[ViTParams, Tag("vit")] | Annotated[CnnParams, Tag("cnn")]
                        | Annotated[HierParams, Tag("hier")], Discriminator(_arch)]


class AugmentParams(Strict):
    scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = Field(
        (0.35, 1.0), description="RandomResizedCrop area range ([1, 1] = whole images)")
    ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (3 / 4, 4 / 3), description="RandomResizedCrop aspect-ratio range")
    hflip: Annotated[float, Field(ge=0, le=1)] = Field(0.5, description="horizontal flip probability")

    @model_validator(mode="after")
    def _ordered(self) -> AugmentParams:
        for name in ("scale", "ratio"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), got ({lo}, {hi})")
        return self


class DataParams(Strict):
    source: str = Field("fashion-mnist", description="fashion-mnist[:/dir/with/idx/files], synthetic:N, or an "
                        "image folder (local path or fsspec URL) with one sub-folder per split (docs/data.md)")
    train_split: str = Field("train", description="pre-training split: a sub-folder of source ('.' = source itself)")
    eval_source: str | None = Field(None, description="labeled evaluation data (null = source): pre-train on "
                                    "unlabeled photos, evaluate on a labeled set")
    eval_train_split: str = Field("train", description="the eval source's split evaluation fits on (k-NN, probe)")
    eval_split: str = Field("test", description="the eval source's split evaluation scores on")
    image_size: PositiveInt = Field(32, description="images are resized (shorter side) and center-cropped to this")
    to_rgb: bool = Field(True, description="grey images become 3 channels")
    subset: PositiveInt | None = Field(None, description="train on a seeded random subset of this many images")
    seed: int = Field(0, description="seeds the subset and synthetic data")
    strict: bool = Field(False, description="corrupt image files are errors instead of skipped with a warning")
    background: tuple[Annotated[int, Field(ge=0, le=255)], Annotated[int, Field(ge=0, le=255)],
                      Annotated[int, Field(ge=0, le=255)]] = Field(
        (255, 255, 255), description="RGB colour that transparent pixels (PNG alpha, GIF transparency) are laid on")
    mean: tuple[float, ...] = Field((0.5, 0.5, 0.5), description="per-channel normalization mean (0-1 scale)")
    std: tuple[Annotated[float, Field(gt=0)], ...] = Field((0.5, 0.5, 0.5), description="per-channel "
                                                           "normalization std (0-1 scale)")
    augment: AugmentParams = AugmentParams()
    on_device: Literal["auto", "always", "never"] = Field(
        "auto", description="array form: keep the uint8 training set on the GPU (auto: on CUDA when it takes at "
                            "most a quarter of the free GPU memory)", json_schema_extra=RUN_CONTROL)
    storage: Literal["auto", "array", "shards"] = Field(
        "auto", description="array: decoded at image_size in one memory-mapped uint8 array; shards: encoded images "
                            "streamed by DataLoader workers, random crops from the full image; auto: array when it "
                            "takes at most array_max_gb", json_schema_extra=RUN_CONTROL)
    array_max_gb: Annotated[float, Field(gt=0)] = Field(8.0, description="auto storage: the largest array kept",
                                                        json_schema_extra=RUN_CONTROL)
    max_side: PositiveInt | None = Field(512, description="shards: images whose shorter side is longer are "
                                         "re-encoded once at this shorter side (null = original bytes)")
    shards_url: str | None = Field(None, description="shards: write them under this fsspec URL (s3://, gs://) "
                                   "instead of data/prepared; lineage is then the manifest's digest",
                                   json_schema_extra=RUN_CONTROL)
    num_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="shards: DataLoader workers per rank decoding and cropping (auto: CPUs / ranks, <= 8)",
        json_schema_extra=RUN_CONTROL)

    def token_grid(self, patch_size: int, field: str) -> tuple[int, int]:
        """The (rows, cols) token grid of `patch_size` patches; `field` names the param in the error."""
        if self.image_size % patch_size:
            raise ValueError(f"{field} {patch_size} does not divide data.image_size {self.image_size}")
        return (self.image_size // patch_size,) * 2

    @model_validator(mode="after")
    def _stats(self) -> DataParams:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self


class OptimParams(Strict):
    base_lr: Annotated[float, Field(gt=0)] = Field(5e-4, description="AdamW lr = base_lr x train.batch_size / 256 "
                                                   "(MAE's ImageNet value is 1.5e-4 over 800+ epochs)")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.05, description="AdamW weight decay (never on 1-d "
                                                        "params, biases and tokens)")
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    clip_grad: Annotated[float, Field(gt=0)] | None = Field(None, description="max gradient norm (null = no clipping)")
    fused: Literal["auto", "on", "off"] = Field("auto", description="fused AdamW (auto: on CUDA)")


class ScheduleParams(Strict):
    warmup_fraction: Annotated[float, Field(ge=0, le=1)] = Field(0.05, description="linear warm-up over this "
                                                                 "fraction of the steps, then cosine decay")
    warmup_steps: Annotated[int, Field(ge=0)] | None = Field(None, description="warm-up in steps (replaces "
                                                             "warmup_fraction)")
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="the cosine ends at lr x this")


class TrainParams(Strict):
    image_size: PositiveInt | None = Field(None, description="pre-train at this resolution (FastMIM's low-res "
                                           "pre-training); null = data.image_size. Evaluation uses data.image_size")
    batch_size: PositiveInt = Field(256, description="the global batch (all processes, all accumulation steps)")
    accum_steps: PositiveInt = Field(1, description="gradient accumulation: micro-batch = batch_size / (processes "
                                     "x accum_steps)")
    epochs: Annotated[float, Field(gt=0)] = Field(3.0, description="passes over the training set (fractions allowed)")
    steps: PositiveInt | None = Field(None, description="optimizer steps; when set, it replaces epochs")
    seed: int = Field(0, description="every batch, crop, mask and dropout derives from (seed, step)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=RUN_CONTROL)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision (auto: bf16 on CUDA)")
    compile: bool = Field(False, description="torch.compile the model", json_schema_extra=RUN_CONTROL)
    deterministic: bool = False
    ckpt_every: PositiveInt = Field(200, description="checkpoint every this many steps (a killed run resumes there)",
                                    json_schema_extra=RUN_CONTROL)
    ckpt_every_s: Annotated[float, Field(gt=0)] | None = Field(
        300.0, description="also checkpoint when this many seconds passed since the last one (null: steps only)",
        json_schema_extra=RUN_CONTROL)
    resume: Literal["auto", "never", "force"] = Field(
        "auto", description="auto: continue a checkpoint made by the same run (params, data, inputs, code) and "
                            "refuse one made by another, naming what changed; never: start at step 0; force: "
                            "continue it anyway (the changes are logged and recorded)", json_schema_extra=RUN_CONTROL)
    log_every_s: Annotated[float, Field(gt=0)] = Field(10.0, description="log a progress line this often",
                                                       json_schema_extra=RUN_CONTROL)
    log_every_steps: PositiveInt | None = Field(None, json_schema_extra=RUN_CONTROL)
    picture_every: Annotated[int, Field(ge=0)] | None = Field(
        None, description="while training, draw the reconstruction grid of the fixed held-out images every this "
                          "many steps and log it to MLflow with its step (the UI's image slider); null: 4 evenly "
                          "spaced pictures per run, the last at the final step; 0: none", json_schema_extra=RUN_CONTROL)


class LauncherParams(Strict):
    nproc_per_node: PositiveInt | Literal["auto"] = Field(1, description="processes (GPUs) per node; >1 re-launches "
                                                          "the stage under torchrun (auto: every visible GPU)")
    nnodes: PositiveInt = Field(1, description="nodes; >1 needs MIM_RDZV_ENDPOINT (docs/scaling.md)")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="ddp: a whole model per rank; fsdp: parameters, "
                                             "gradients and optimizer state sharded across ranks (large models)")
    rdzv_timeout_s: PositiveInt = Field(600, description="several nodes: how long torchrun waits for every node to "
                                        "join the rendezvous at MIM_RDZV_ENDPOINT before it gives up")


class RecipeParams(Strict):
    """One method's pre-training recipe: the contents of `params/<method>.yaml`."""

    method: MethodParams = MaeParams()
    model: ModelParams = ViTParams()
    optim: OptimParams = OptimParams()
    schedule: ScheduleParams = ScheduleParams()
    train: TrainParams = TrainParams()
    launcher: LauncherParams = Field(LauncherParams(), json_schema_extra=RUN_CONTROL)


class PretrainParams(RecipeParams):
    """Everything a pre-training run reads: a recipe plus the data it trains on (`params/data.yaml`)."""

    data: DataParams = DataParams()

    @classmethod
    def compose(cls, recipe: RecipeParams, data: DataParams) -> PretrainParams:
        return cls.model_validate({**recipe.model_dump(), "data": data.model_dump()})

    @property
    def image_size(self) -> int:
        """The pre-training resolution: `train.image_size` when set, else the data's."""
        return self.train.image_size or self.data.image_size

    def recipe(self) -> RecipeParams:
        return RecipeParams.model_validate(self.model_dump(exclude={"data"}))

    @model_validator(mode="after")
    def _cache_needs_whole_images(self) -> PretrainParams:
        cache = getattr(self.method, "teacher_cache", None)
        if cache == "always" and self.data.augment.scale[0] < 1:
            raise ValueError(f"method.teacher_cache 'always' needs whole training images, but data.augment.scale is "
                             f"{list(self.data.augment.scale)}: set it to [1.0, 1.0], or teacher_cache to auto")
        return self
