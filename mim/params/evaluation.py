"""Params of downstream evaluation: frozen-encoder k-NN and linear probe (`params/eval.yaml`) and fine-tuning
(`params/transfer.yaml`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from mim.params.base import RUN_CONTROL, Fraction, PositiveInt, Strict


def _distinct(fractions: list[float]) -> list[float]:
    if not fractions:
        raise ValueError("list at least one label fraction (1.0 = all labels)")
    if len(set(fractions)) != len(fractions):
        raise ValueError(f"label fractions repeat a value: {fractions}")
    return fractions


LabelFractions = Annotated[list[Annotated[float, Field(gt=0, le=1)]], AfterValidator(_distinct)]
FRACTIONS_HELP = ("class-balanced, seeded subsets of the fit split (of train_subset when set) to fit on, each reported "
                  "as its own metric (0.01 -> {p}_1pct_top1; 1.0 -> {p}_top1, all labels); the subsets depend on "
                  "seed only, so every method sees the same images and 1 % lies inside 10 %")


class KnnParams(Strict):
    k: PositiveInt = Field(20, description="neighbours (cosine similarity, weighted by exp(sim / temperature))")
    temperature: Annotated[float, Field(gt=0)] = 0.07


class LinearParams(Strict):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 1024
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    optimizer: Literal["adamw", "sgd", "lars"] = Field("adamw", description="sgd and lars with momentum 0.9 (MAE: "
                                                       "lars, lr 0.1 x batch / 256, weight_decay 0)")


class FinetuneParams(Strict):
    """End-to-end fine-tuning (the transfer stage) of a pre-trained encoder, or of a random one (the scratch
    baseline, same recipe)."""

    epochs: Annotated[float, Field(gt=0)] = 1.0
    batch_size: PositiveInt = 128
    base_lr: Annotated[float, Field(gt=0)] = Field(1e-3, description="lr = base_lr * batch_size / 256")
    weight_decay: Annotated[float, Field(ge=0)] = 0.05
    layer_decay: Annotated[float, Field(gt=0, le=1)] = Field(0.75, description="lr x decay^(L+1-depth); 0.65 for "
                                                             "ViT-B in MAE")
    scratch_layer_decay: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="the scratch encoder's layer_decay: 1 = every layer at the full rate (the decay keeps "
                         "pre-trained early layers near their weights; a random init has nothing to keep)")
    drop_path: Fraction = 0.1
    label_smoothing: Fraction = 0.1
    mixup: Annotated[float, Field(ge=0)] = Field(0.0, description="timm Mixup alpha (0 = off)")
    cutmix: Annotated[float, Field(ge=0)] = Field(0.0, description="timm CutMix alpha (0 = off)")
    warmup_fraction: Fraction = 0.1
    pool: Literal["cls", "mean"] = "mean"
    train_subset: PositiveInt | None = Field(None, description="seeded subset of the train split")
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=RUN_CONTROL)
    seed: int = 0
    ckpt_every: PositiveInt = Field(200, json_schema_extra=RUN_CONTROL)
    ckpt_every_s: Annotated[float, Field(gt=0)] | None = Field(
        300.0, description="also checkpoint when this many seconds passed since the last one (null: steps only)",
        json_schema_extra=RUN_CONTROL)
    resume: Literal["auto", "never", "force"] = Field(
        "auto", description="as train.resume: continue a killed run's checkpoint when the same run made it",
        json_schema_extra=RUN_CONTROL)
    label_fractions: LabelFractions = Field([1.0], description=FRACTIONS_HELP.format(p="finetune") + "; one "
                                            "fine-tune per fraction")
    low_label_steps: PositiveInt | None = Field(
        None, description="optimizer steps of each fine-tune on a label fraction below 1 (null: `epochs` over that "
        "subset, few steps at 1 %)")
    auto_augment: Annotated[str, Field(pattern=r"^rand(-|$)")] | None = Field(
        None, description="timm RandAugment config string (rand_augment_transform), e.g. rand-m9-mstd0.5-inc1 as "
        "MAE; applied per image after the crop, on the CPU (null = off)")
    reprob: Fraction = Field(0.0, description="timm RandomErasing probability per image, on the normalized batch "
                             "(MAE 0.25; 0 = off)")
    remode: Literal["const", "rand", "pixel"] = Field("pixel", description="random erasing fill: zeros, one normal "
                                                      "colour per box, or normal noise per pixel")
    recount: PositiveInt = Field(1, description="random erasing: up to this many boxes per image")
    eval_crop_pct: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="test images resized to image_size / eval_crop_pct and center-cropped to image_size "
        "(timm crop_pct; 0.875 on ImageNet); null = the whole image resized")

    @model_validator(mode="after")
    def _batch_fits_subset(self) -> FinetuneParams:
        if self.train_subset is not None and self.batch_size > self.train_subset:
            raise ValueError(f"batch_size {self.batch_size} is larger than train_subset {self.train_subset}: lower "
                             "finetune.batch_size or raise finetune.train_subset")
        return self


class TransferParams(Strict):
    """`params/transfer.yaml`: what `mim transfer` runs for each pre-trained encoder (and the scratch baseline)."""

    protocols: list[Literal["knn", "linear", "finetune"]] = Field(
        ["finetune"], description="knn/linear use params/eval.yaml (the evaluate stage already reports them)")
    finetune: FinetuneParams = FinetuneParams()
    scratch_of: str = Field("mae", description="the recipe whose encoder architecture the scratch baseline trains")

    @model_validator(mode="after")
    def _some_protocol(self) -> TransferParams:
        if not self.protocols:
            raise ValueError("protocols: list at least one of knn, linear, finetune")
        return self


class EvalParams(Strict):
    pool: Literal["cls", "mean"] = Field("mean", description="features: mean of the patch tokens or the class "
                                         "token")
    batch_size: PositiveInt = 512
    train_subset: PositiveInt | None = Field(None, description="seeded subset of the fit split (null = all)")
    test_subset: PositiveInt | None = Field(None, description="seeded subset of the scored split (null = all)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    knn: KnnParams = KnnParams()
    linear: LinearParams = LinearParams()
    label_fractions: LabelFractions = Field([1.0], description=FRACTIONS_HELP.format(p="linear") + "; linear probe "
                                            "only (features extracted once), k-NN keeps all labels; must hold 1.0")

    @model_validator(mode="after")
    def _full_labels(self) -> EvalParams:
        if 1.0 not in self.label_fractions:
            raise ValueError(f"label_fractions {self.label_fractions} must hold 1.0: the report reads the full-label "
                             "linear_top1")
        return self
