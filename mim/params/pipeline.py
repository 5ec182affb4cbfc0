"""`params/pipeline.yaml`: which recipes the DVC pipeline runs, their random-init twins, and the seeds. dvc.yaml
reads this file as `vars`, so editing it changes the stage list (`pretrain@<recipe>-<seed>`, ...)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from mim.params.base import Strict

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class RecipeInput(Strict):
    """What a recipe trains from beyond data/prepared."""

    input: str = Field("data/prepared", description="the one artefact beyond data/prepared the recipe trains from, "
                       "as its params file names it (checked): models/tokenizer (CCViT, CIM), models/teacher "
                       "(Img2Vec; DMJD with target: teacher), else data/prepared; the flows build it first")


class PipelineParams(Strict):
    """The pipeline's shape: each recipe's pre-training, evaluation and transfer run once per seed (DVC matrix
    stages), and so do the random-init baselines, so that a recipe and its twin differ by the pre-training only."""

    methods: dict[Name, RecipeInput] = Field(
        description="recipe (params/<recipe>.yaml) -> its input; each runs pretrain, evaluate and transfer per seed")
    baselines: list[Name] = Field(
        description="recipes whose randomly initialised encoder is evaluated per seed (one per encoder architecture "
                    "the methods use): the twin each method's difference is measured against")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        [0], description="every seed runs the whole comparison; replaces train.seed, eval.yaml's seed and "
                         "finetune.seed in the pipeline's stages (the report's intervals are over these)")
    transfer_seeds: list[Annotated[int, Field(ge=0)]] = Field(
        description="the seeds at which every recipe and the scratch encoder are fine-tuned end to end "
                    "(transfer@<recipe>-<seed>, scratch@<seed>); a subset of seeds, [] for none (the CPU demo: "
                    "fine-tuning is the costliest protocol and needs the longest budget to mean anything)")
    reference: Name | None = Field(
        None, description="the recipe every other one is compared with, paired by seed, in the report's "
                          "\"minus the reference\" table (most papers claim to beat MAE); null = the first of methods")

    @field_validator("methods")
    @classmethod
    def _some_methods(cls, value: dict) -> dict:
        if not value:
            raise ValueError("no recipes: name at least one (e.g. mae: {input: data/prepared})")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("no seeds: give at least one (e.g. [0])")
        if len(set(value)) != len(value):
            raise ValueError(f"{value}: a seed is listed twice")
        return value

    @property
    def reference_recipe(self) -> str:
        """`reference`, else the first recipe."""
        return self.reference or next(iter(self.methods))

    @model_validator(mode="after")
    def _baselines_are_recipes(self) -> PipelineParams:
        if stray := [s for s in self.transfer_seeds if s not in self.seeds]:
            raise ValueError(f"transfer_seeds {stray} are not among seeds {self.seeds}")
        if len(set(self.transfer_seeds)) != len(self.transfer_seeds):
            raise ValueError(f"transfer_seeds {self.transfer_seeds}: a seed is listed twice")
        if unknown := [b for b in self.baselines if b not in self.methods]:
            raise ValueError(f"baselines {unknown} are not among methods ({', '.join(self.methods)})")
        if self.reference is not None and self.reference not in self.methods:
            raise ValueError(f"reference {self.reference!r} is not among methods ({', '.join(self.methods)})")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"baselines {self.baselines}: a recipe is listed twice")
        return self
