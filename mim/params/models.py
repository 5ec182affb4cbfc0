"""Pydantic models of the data and of pre-training recipes (method, model, optimizer, schedule, training), the
single source of parameter truth with `targets.py` (tokenizer, teacher, diversity) and `evaluation.py`.

Defaults are sized for the embedded default: Fashion-MNIST on a CPU.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Strict(BaseModel):
    """Unknown keys are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ViTParams(Strict):
    arch: Literal["vit"] = "vit"
    size: Literal["micro", "tiny", "small", "base", "large"] = "micro"
    patch_size: PositiveInt = 4
    embed_dim: PositiveInt | None = None
    depth: PositiveInt | None = None
    num_heads: PositiveInt | None = None
    mlp_ratio: Annotated[float, Field(gt=0)] = 4.0
    qkv_bias: bool = True
    norm_eps: Annotated[float, Field(gt=0)] = 1e-6
    drop_path: Fraction = 0.0
    pos_embed: Literal["sincos", "learn"] = "sincos"


class CnnParams(Strict):
    """A timm CNN encoder (CIM's enhancer): any ResNet depth, optionally slimmer, dilated or fed larger images."""

    arch: Literal["cnn"] = "cnn"
    name: str = Field("resnet18", description="a timm CNN name (resnet10t, resnet18, resnet50, ...)")
    patch_size: PositiveInt = Field(4, description="the token grid per-token heads and tokenizers use")
    input_size: PositiveInt | None = Field(None, description="resize images to this before the stem (None = as is)")
    output_stride: Literal[8, 16, 32] = Field(32, description="8/16 dilate the last stages (bigger final maps)")
    kwargs: dict[str, Any] = Field({}, description="more timm.create_model arguments, e.g. channels, stem_width")
    drop_path: Fraction = 0.0


class HierParams(Strict):
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


def _arch(value: Any) -> str:
    return value.get("arch", "vit") if isinstance(value, dict) else getattr(value, "arch", "vit")


ModelParams = Annotated[Annotated[ViTParams, Tag("vit")] | Annotated[CnnParams, Tag("cnn")]
                        | Annotated[HierParams, Tag("hier")], Discriminator(_arch)]


class AugmentParams(Strict):
    scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = (0.35, 1.0)
    ratio: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (3 / 4, 4 / 3)
    hflip: Annotated[float, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _ordered(self) -> AugmentParams:
        for name in ("scale", "ratio"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high), got ({lo}, {hi})")
        return self


class DataParams(Strict):
    source: str = "fashion-mnist"
    train_split: str = "train"
    eval_split: str = "test"
    image_size: PositiveInt = 32
    to_rgb: bool = True
    subset: PositiveInt | None = Field(None, description="train on a seeded random subset of this many images")
    seed: int = Field(0, description="seeds the subset and synthetic data")
    strict: bool = Field(False, description="corrupt image files are errors instead of skipped with a warning")
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[Annotated[float, Field(gt=0)], ...] = (0.5, 0.5, 0.5)
    augment: AugmentParams = AugmentParams()
    on_device: Literal["auto", "always", "never"] = "auto"

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


class DecoderParams(Strict):
    embed_dim: PositiveInt = 64
    depth: PositiveInt = 1
    num_heads: PositiveInt = 2


class MethodBase(Strict):
    """What every method's params share: `input_dir`, the artefact beyond the data it trains from."""

    @property
    def input_dir(self) -> str | None:
        return None


class HogParams(Strict):
    """HOG targets: `dmjd` (central differences, cell mean, LayerNorm over bins) or `maskfeat` (Sobel, cell sum,
    L2 over bins; MaskFeat and FastMIM)."""

    flavour: Literal["dmjd", "maskfeat"] = "dmjd"
    cell: PositiveInt = Field(2, description="cell side in pixels (8 for 16-px patches; 2 for 4-px ones)")
    bins: PositiveInt = 9


class MaeParams(MethodBase):
    name: Literal["mae"] = "mae"
    mask_ratio: Fraction = 0.75
    norm_pix_loss: bool = True
    target: Literal["pixels", "hog"] = Field("pixels", description="hog = FastMIM-style HOG regression")
    hog: HogParams = HogParams()
    views: PositiveInt = Field(1, description="masked views per image, visible sets disjoint (DMJD's sampler)")
    decoder: DecoderParams = DecoderParams()


class SimMimParams(MethodBase):
    name: Literal["simmim"] = "simmim"
    mask_ratio: Fraction = 0.6
    mask_unit_size: PositiveInt = 8
    target: Literal["pixels", "hog"] = Field("pixels", description="hog = MaskFeat (mask tokens + HOG, L2)")
    hog: HogParams = HogParams()
    views: PositiveInt = Field(1, description="masked views per image, visible sets disjoint (DMJD's sampler; "
                               "the mask units must tile the token grid)")


class CCViTParams(MethodBase):
    """Centroid-centered modeling: block-wise mask + centroid replacement, CE to centroid ids + MSE to pixels."""

    name: Literal["ccvit"] = "ccvit"
    tokenizer: str = Field("models/tokenizer", description="folder written by `mim tokenizer`")
    mask_ratio: Fraction = 0.38  # 75 of 196 in the paper
    min_block: PositiveInt = Field(4, description="smallest mask block in tokens (16 at 14x14 tokens in BEiT)")
    replace_ratio: Fraction = Field(0.1, description="tokens replaced by their own centroid, among unmasked ones")
    pixel_layer: PositiveInt | None = Field(None, description="encoder block feeding the pixel branch (1-based); "
                                            "None = 3/4 of the depth (9 of 12)")
    pixel_depth: PositiveInt = 2
    ce_weight: Annotated[float, Field(ge=0)] = 1.0
    mse_weight: Annotated[float, Field(ge=0)] = 1.0

    @property
    def input_dir(self) -> str:
        return self.tokenizer

    @model_validator(mode="after")
    def _room_to_replace(self) -> CCViTParams:
        if self.mask_ratio + self.replace_ratio >= 1:
            raise ValueError(f"mask_ratio + replace_ratio must be < 1, got {self.mask_ratio} + {self.replace_ratio}")
        return self


class Img2VecParams(MethodBase):
    """Img2Vec: random mask, MAE-style encoder on visible tokens, a light decoder regresses a frozen teacher's
    features of the masked tokens."""

    name: Literal["img2vec"] = "img2vec"
    teacher: str = Field("models/teacher", description="folder written by `mim teacher` (params/teacher.yaml)")
    mask_ratio: Fraction = 0.75
    loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    beta: Annotated[float, Field(gt=0)] = Field(1.0, description="SmoothL1's switch from L2 to L1")
    decoder: DecoderParams = DecoderParams()
    teacher_cache: Literal["auto", "always", "never"] = Field(
        "auto", description="teacher features computed once per training image (auto: when the augmentation keeps "
                            "whole images, data.augment.scale [1, 1], and they fit teacher_cache_mb) or every step")
    teacher_cache_mb: Annotated[int, Field(gt=0)] = Field(2048, description="largest cache `auto` builds (MiB)")

    @property
    def input_dir(self) -> str:
        return self.teacher


class GeneratorParams(Strict):
    """CIM's generator: a small ViT on the block-masked image (same patch size as the enhancer's token grid)."""

    embed_dim: PositiveInt = 64
    depth: PositiveInt | None = Field(None, description="None = a third of a ViT enhancer's depth (at least 1); "
                                      "2 for a CNN enhancer")
    num_heads: PositiveInt = 2
    lr_scale: Annotated[float, Field(gt=0)] = Field(1.0, description="the generator's lr = the enhancer's x this "
                                                    "(its own optimizer settings, as a separate AdamW would have)")
    weight_decay: Annotated[float, Field(ge=0)] | None = Field(None, description="null = optim.weight_decay")


class CimParams(MethodBase):
    """CIM: a generator's sampled centroid patches corrupt the image; the enhancer (model: a ViT or a CNN)
    detects replaced tokens (revdet) or recovers all pixels (respix)."""

    name: Literal["cim"] = "cim"
    tokenizer: str = Field("models/tokenizer", description="folder written by `mim tokenizer` (the generator's ids)")
    objective: Literal["revdet", "respix"] = "revdet"
    mask_ratio: Fraction = Field(0.4, description="BEiT block masking on the generator's input")
    min_block: PositiveInt = 4
    temperature: Annotated[float, Field(gt=0)] = Field(1.0, description="sampling softmax(logits / T)")
    decode_all: bool = Field(False, description="decode every patch through the codebook, not only the masked ones")
    window: PositiveInt = Field(7, description="ResPix: odd side of the sliding normalization window, in pixels")
    enhancer_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="lambda in L_gen + lambda * L_enh")
    generator: GeneratorParams = GeneratorParams()

    @property
    def input_dir(self) -> str:
        return self.tokenizer

    @model_validator(mode="after")
    def _odd_window(self) -> CimParams:
        if self.window % 2 == 0:
            raise ValueError(f"window must be odd (a centred sliding window), got {self.window}")
        return self


class DmjdParams(MethodBase):
    """DMJD: disjoint masked views; the decoder predicts masked tokens' targets (L2), a projector on the
    encoder's visible tokens predicts theirs (SmoothL1)."""

    name: Literal["dmjd"] = "dmjd"
    mask_ratio: Fraction = 0.6
    views: PositiveInt = Field(2, description="masked views per image, visible sets disjoint (1 = the single-view "
                               "counterpart `mim bench dmjd` compares against)")
    unit: PositiveInt = Field(1, description="mask on blocks of unit x unit tokens (2 = DMJD's 32-px units at 16 px)")
    target: Literal["hog", "teacher"] = "hog"
    hog: HogParams = HogParams()
    teacher: str = Field("models/teacher", description="target: teacher -> the folder `mim teacher` writes")
    visible_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="L = L_mim + visible_weight * L_vis")
    beta: Annotated[float, Field(gt=0)] = Field(2.0, description="SmoothL1 beta of the visible branch")
    decoder: DecoderParams = DecoderParams()
    lr_per_mask_ratio: bool = Field(True, description="lr = base_lr x batch / 256 / mask_ratio, the authors' rule "
                                    "(their effective batch is batch x pred_ratio / mask_ratio, pred_ratio 1)")

    @property
    def input_dir(self) -> str | None:
        return self.teacher if self.target == "teacher" else None


class MixMimParams(MethodBase):
    """MixMIM: masked tokens filled with the partner image's, both images reconstructed (model: arch hier)."""

    name: Literal["mixmim"] = "mixmim"
    mask_ratio: Fraction = Field(0.5, description="fraction of last-grid tokens taken from the partner image")
    norm_pix_loss: bool = True
    decoder: DecoderParams = DecoderParams()


MethodParams = Annotated[MaeParams | SimMimParams | CCViTParams | Img2VecParams | CimParams | MixMimParams
                         | DmjdParams, Field(discriminator="name")]
METHOD_NAMES: tuple[str, ...] = tuple(m.model_fields["name"].default for m in get_args(get_args(MethodParams)[0]))


class OptimParams(Strict):
    base_lr: Annotated[float, Field(gt=0)] = 5e-4  # MAE's ImageNet value is 1.5e-4 over 800+ epochs
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    clip_grad: Annotated[float, Field(gt=0)] | None = None
    fused: Literal["auto", "on", "off"] = "auto"


class ScheduleParams(Strict):
    warmup_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    warmup_steps: Annotated[int, Field(ge=0)] | None = None
    min_lr_ratio: Annotated[float, Field(ge=0, le=1)] = 0.0


class TrainParams(Strict):
    image_size: PositiveInt | None = Field(None, description="pre-train at this resolution (FastMIM's low-res "
                                           "pre-training); null = data.image_size. Evaluation uses data.image_size")
    batch_size: PositiveInt = 256
    accum_steps: PositiveInt = 1
    epochs: Annotated[float, Field(gt=0)] = 3.0
    steps: PositiveInt | None = Field(None, description="optimizer steps; when set, it replaces epochs")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    compile: bool = False
    deterministic: bool = False
    ckpt_every: PositiveInt = 200
    log_every_s: Annotated[float, Field(gt=0)] = 10.0
    log_every_steps: PositiveInt | None = None


class LauncherParams(Strict):
    nproc_per_node: PositiveInt | Literal["auto"] = 1
    nnodes: PositiveInt = 1


class RecipeParams(Strict):
    """One method's pre-training recipe: the contents of `params/<method>.yaml`."""

    method: MethodParams = MaeParams()
    model: ModelParams = ViTParams()
    optim: OptimParams = OptimParams()
    schedule: ScheduleParams = ScheduleParams()
    train: TrainParams = TrainParams()
    launcher: LauncherParams = LauncherParams()


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
