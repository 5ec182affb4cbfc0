"""Per-method params (`method:` in a recipe): a discriminated union on `name`, one model per method."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from mim.params.base import Fraction, MaskRatio, PositiveInt, Strict

MaskCountRule = Literal["official", "round"]  # mim.masking.checks.MaskCount


def _mask_count_field(source: str) -> Any:
    """The `mask_count` field of the MAE-family methods: `official` by default, the rule of `source`'s code."""
    return Field("official", description=f"how mask_ratio becomes a count of N tokens: official keeps "
                 f"int(N * (1 - ratio)), as {source}; round masks int(N * ratio + 0.5)")


class DecoderParams(Strict):
    embed_dim: PositiveInt = Field(64, description="decoder width")
    depth: PositiveInt = Field(1, description="decoder blocks")
    num_heads: PositiveInt = Field(2, description="decoder attention heads")


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
    mask_ratio: MaskRatio = Field(0.75, description="fraction of patches hidden from the encoder")
    norm_pix_loss: bool = Field(True, description="the target is each patch's pixels normalized by its own mean/std")
    target: Literal["pixels", "hog"] = Field("pixels", description="hog = FastMIM-style HOG regression")
    hog: HogParams = HogParams()
    views: PositiveInt = Field(1, description="masked views per image, visible sets disjoint (DMJD's sampler)")
    mask_count: MaskCountRule = _mask_count_field("MAE's and transformers' code")
    decoder: DecoderParams = DecoderParams()


class SimMimParams(MethodBase):
    name: Literal["simmim"] = "simmim"
    mask_ratio: MaskRatio = Field(0.6, description="fraction of mask units replaced by the mask token")
    mask_unit_size: PositiveInt = Field(8, description="masking granularity in pixels (a multiple of the patch size)")
    target: Literal["pixels", "hog"] = Field("pixels", description="hog = MaskFeat (mask tokens + HOG, L2)")
    hog: HogParams = HogParams()
    views: PositiveInt = Field(1, description="masked views per image, visible sets disjoint (DMJD's sampler; "
                               "the mask units must tile the token grid)")


class CCViTParams(MethodBase):
    """Centroid-centered modeling: block-wise mask + centroid replacement, CE to centroid ids + MSE to pixels."""

    name: Literal["ccvit"] = "ccvit"
    tokenizer: str = Field("models/tokenizer", description="folder written by `mim tokenizer`")
    mask_ratio: MaskRatio = 0.38  # 75 of 196 in the paper
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
    mask_ratio: MaskRatio = 0.75
    mask_count: MaskCountRule = _mask_count_field("MAE's and transformers' code")
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
    mask_ratio: MaskRatio = Field(0.4, description="BEiT block masking on the generator's input")
    min_block: PositiveInt = 4
    temperature: Annotated[float, Field(gt=0)] = Field(1.0, description="sampling softmax(logits / T)")
    decode_all: bool = Field(True, description="the corrupted image is the generator's whole token map decoded "
                             "through the codebook, as in the paper (visible patches become their own centroid); "
                             "false = only masked patches are replaced, visible ones keep their pixels")
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
    mask_ratio: MaskRatio = 0.6
    views: PositiveInt = Field(2, description="masked views per image, visible sets disjoint (1 = the single-view "
                               "counterpart `mim bench dmjd` compares against)")
    unit: PositiveInt = Field(1, description="mask on blocks of unit x unit tokens (2 = DMJD's 32-px units at 16 px)")
    mask_count: MaskCountRule = _mask_count_field("the authors' code; with unit > 1, N counts the blocks")
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
    mask_ratio: MaskRatio = Field(0.5, description="fraction of last-grid tokens taken from the partner image")
    norm_pix_loss: bool = True
    decoder: DecoderParams = DecoderParams()


MethodParams = Annotated[MaeParams | SimMimParams | CCViTParams | Img2VecParams | CimParams | MixMimParams
                         | DmjdParams, Field(discriminator="name")]
METHOD_NAMES: tuple[str, ...] = tuple(m.model_fields["name"].default for m in get_args(get_args(MethodParams)[0]))
