"""Constraints that span params files: each file is valid on its own, yet the run they make together is not
(a patch size that does not tile the images, a tokenizer built for other patches, a batch that does not split
over the processes). `mim params check` and every stage that loads a recipe apply them, so `dvc repro` stops
before any work with the same line, naming both files."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from mim.params.models import DataParams, RecipeParams
from mim.params.pipeline import PipelineParams, RecipeInput
from mim.params.targets import TeacherParams, TokenizerParams

TOKENIZER_METHODS = ("ccvit", "cim")  # methods that predict the ids of params/tokenizer.yaml's codebook


def uses_teacher(recipe: RecipeParams) -> bool:
    """True when the recipe regresses the features of params/teacher.yaml's teacher."""
    name = recipe.method.name
    return name == "img2vec" or (name == "dmjd" and getattr(recipe.method, "target", None) == "teacher")


def shared_inputs(recipe: RecipeParams) -> tuple[str, ...]:
    """The shared params files (`tokenizer`, `teacher`) whose outputs `recipe` trains from."""
    names = ["tokenizer"] if recipe.method.name in TOKENIZER_METHODS else []
    return (*names, *(["teacher"] if uses_teacher(recipe) else []))


def recipe_input(recipe: RecipeParams) -> str:
    """The one folder `recipe` trains from beyond the data (its tokenizer or teacher folder), else the data's."""
    return recipe.method.input_dir or RecipeInput.model_fields["input"].default


def pipeline_input_problems(pipeline: PipelineParams, pipeline_file: str,
                            recipes: dict[str, tuple[RecipeParams, str]]) -> list[str]:
    """Each pipeline recipe whose declared `input` is not the folder its params file trains from (`recipes`:
    name -> (params, file)): the Prefect flows run that input's stage first, so a wrong one builds the wrong
    artefact, or none."""
    problems = []
    for name, item in pipeline.methods.items():
        if name in recipes:
            recipe, recipe_file = recipes[name]
            if Path(item.input) != Path(wanted := recipe_input(recipe)):
                problems.append(f"{pipeline_file}: methods: {name}: input is {item.input}, but {recipe_file} trains "
                                f"from {wanted}: set input: {wanted}")
    return problems


def cross_checks(recipe: RecipeParams, recipe_file: str, data: DataParams, data_file: str,
                 shared: dict[str, tuple[BaseModel, str]] | None = None) -> list[str]:
    """Problems of `recipe` (from `recipe_file`) trained on `data` (from `data_file`) with the shared files
    `shared` ({"tokenizer": (params, file), "teacher": ...}), one line each naming both files."""
    shared = shared or {}
    problems: list[str] = []
    model, method, train = recipe.model, recipe.method, recipe.train
    patch = model.patch_size
    sizes = {"data.image_size": (data.image_size, data_file)}
    if train.image_size:
        sizes["train.image_size"] = (train.image_size, recipe_file)
    if model.arch == "cnn" and model.input_size:
        sizes = {"model.input_size": (model.input_size, recipe_file)}
    for field, (size, where) in sizes.items():
        if size % patch:
            problems.append(f"{recipe_file}: model.patch_size {patch} does not divide {field} {size} ({where})")
    if method.name == "simmim":
        unit = method.mask_unit_size
        if unit % patch:
            problems.append(f"{recipe_file}: method.mask_unit_size {unit} is not a multiple of model.patch_size "
                            f"{patch}")
        for field, (size, where) in sizes.items():
            if size % unit:
                problems.append(f"{recipe_file}: method.mask_unit_size {unit} does not divide {field} {size} "
                                f"({where})")
    if method.name in TOKENIZER_METHODS and "tokenizer" in shared:
        tok, tok_file = shared["tokenizer"]
        if isinstance(tok, TokenizerParams) and tok.patch_size != patch:
            problems.append(f"{recipe_file}: model.patch_size {patch} differs from patch_size {tok.patch_size} in "
                            f"{tok_file} ({method.name} predicts that tokenizer's ids per patch); make them equal")
    if uses_teacher(recipe) and "teacher" in shared:
        teacher, teacher_file = shared["teacher"]
        if isinstance(teacher, TeacherParams) and teacher.patch_size != patch:
            problems.append(f"{recipe_file}: model.patch_size {patch} differs from patch_size {teacher.patch_size} "
                            f"in {teacher_file} (the teacher's features land on the student's token grid)")
    problems += _mask_count(recipe, recipe_file, sizes)
    nproc = recipe.launcher.nproc_per_node
    if isinstance(nproc, int):
        ways = nproc * recipe.launcher.nnodes * train.accum_steps
        if train.batch_size % ways:
            problems.append(f"{recipe_file}: train.batch_size {train.batch_size} is not divisible by "
                            f"launcher.nproc_per_node {nproc} x launcher.nnodes {recipe.launcher.nnodes} x "
                            f"train.accum_steps {train.accum_steps} = {ways}")
        elif method.name == "mixmim" and (train.batch_size // ways) % 2:
            problems.append(f"{recipe_file}: MixMIM pairs sample i with sample B-1-i, so each micro-batch must be "
                            f"even, but train.batch_size {train.batch_size} / {ways} (processes x accum_steps) = "
                            f"{train.batch_size // ways}")
    return problems


def _mask_count(recipe: RecipeParams, recipe_file: str, sizes: dict[str, tuple[int, str]]) -> list[str]:
    """A ViT recipe's mask must hide at least one token (or SimMIM unit) and keep at least one visible, at the
    pre-training size, counted by the method's `mask_count` rule (`round` where it has none;
    `mim.masking.checks.count_for_ratio`)."""
    method, model = recipe.method, recipe.model
    ratio = getattr(method, "mask_ratio", None)
    if ratio is None or model.arch != "vit" or method.name == "mixmim":
        return []
    field = "train.image_size" if "train.image_size" in sizes else "data.image_size"
    size = sizes[field][0]
    unit = method.mask_unit_size if method.name == "simmim" else model.patch_size
    if size % unit:
        return []  # reported above
    total = (size // unit) ** 2
    rule = getattr(method, "mask_count", "round")
    # mim.masking.checks.count_for_ratio's rules, written here so that the params do not import the library
    masked = total - int(total * (1 - ratio)) if rule == "official" else int(total * ratio + 0.5)
    if 0 < masked < total:
        return []
    what = "mask units" if method.name == "simmim" else "tokens"
    counted = f" (method.mask_count {rule})" if hasattr(method, "mask_count") else ""
    return [f"{recipe_file}: method.mask_ratio {ratio} masks {masked} of the {total} {what} at {field} {size}"
            f"{counted}: choose a ratio that masks at least one and keeps at least one"]
