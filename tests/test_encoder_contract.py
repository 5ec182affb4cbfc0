"""The encoder contract (`mim.models.encoder.Encoder`), checked on all three encoders built tiny: token and pooled
shapes agree with `grid` and `embed_dim`, the mean pool is the mean token, tokens brought to a coarser grid are area
means, layer-decay depths cover every parameter in forward order, exports round-trip (and load into timm where the
encoder has a timm name), intermediates come in the number asked for. Controls: the runtime check rejects a class
missing any one member, and a fresh encoder does not reproduce a loaded one's outputs."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch import nn

from mim.analysis.features import feature_maps
from mim.models.cnn import CnnEncoder, CnnSpec
from mim.models.encoder import Encoder, EncoderSpec
from mim.models.export import build_encoder, export_encoder, load_encoder
from mim.models.hier import HierEncoder, HierSpec
from mim.models.vit import MaskedViT, ViTSpec

SPECS = {
    "vit": ViTSpec(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=2),
    "hier": HierSpec(img_size=16, patch_size=2, embed_dim=32, depths=(1, 2), num_heads=(2, 2), window_sizes=(4, 4)),
    "cnn": CnnSpec(name="resnet10t", img_size=16, output_stride=8, kwargs={"stem_width": 16}),
}
TYPES = {"vit": MaskedViT, "hier": HierEncoder, "cnn": CnnEncoder}
# per encoder: (grid, number of blocks or stages, parameter-name prefixes of the blocks in forward order,
# a stem parameter, the parameter at the top)
EXPECTED = {
    "vit": ((4, 4), 2, ["blocks.0.", "blocks.1."], "patch_embed.proj.weight", "norm.weight"),
    "hier": ((4, 4), 3, ["stages.0.blocks.0.", "stages.1.blocks.0.", "stages.1.blocks.1."], "patch_embed.weight",
             "norm.weight"),
    "cnn": ((2, 2), 4, ["body.layer1.", "body.layer2.", "body.layer3.", "body.layer4."], "body.conv1.0.weight", None),
}
ARCHS = list(SPECS)


def _encoder(arch: str, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return build_encoder(SPECS[arch]).eval()


def _images(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_encoder_and_spec_meets_the_protocol(arch):
    encoder = _encoder(arch)
    assert isinstance(encoder, Encoder) and isinstance(encoder, TYPES[arch]) and isinstance(encoder, nn.Module)
    spec = encoder.spec
    assert isinstance(spec, EncoderSpec) and spec.arch == arch
    assert type(spec).from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # as exports store it
    assert encoder.grid == EXPECTED[arch][0]
    assert encoder.patch_size * encoder.grid[0] == spec.img_size


def _members() -> dict[str, object]:
    """A duck-typed stand-in with every member of the contract (none of them does anything)."""
    def method(self, *args, **kwargs):
        return None

    members: dict[str, object] = {"spec": SPECS["vit"], "embed_dim": 8, "grid": property(lambda self: (1, 1)),
                                  "patch_size": property(lambda self: 1)}
    for name in ("forward_tokens", "pooled", "forward_intermediates", "layer_ids", "export_state",
                 "load_export_state"):
        members[name] = method
    return members


def test_the_runtime_check_is_structural_and_needs_every_member():
    members = _members()
    declared = {n for n in vars(Encoder) if not n.startswith("_")} | set(Encoder.__annotations__)
    assert set(members) == declared  # the stand-in covers the whole contract
    assert isinstance(type("Complete", (), members)(), Encoder)  # no inheritance needed
    for missing in members:  # control: leave out any one member and it is no longer an encoder
        partial = type(f"Without_{missing}", (), {k: v for k, v in members.items() if k != missing})
        assert not isinstance(partial(), Encoder), missing
    assert not isinstance(nn.Linear(2, 2), Encoder)


@pytest.mark.parametrize("arch", ARCHS)
def test_tokens_and_pooled_features_agree(arch):
    encoder, x = _encoder(arch), _images()
    with torch.no_grad():
        tokens = encoder.forward_tokens(x)
        rows, cols = encoder.grid
        assert tokens.shape == (3, rows * cols, encoder.embed_dim)
        mean = encoder.pooled(x, "mean")
        assert mean.shape == (3, encoder.embed_dim)
        assert torch.allclose(mean, tokens.mean(dim=1), atol=1e-5)
        cls = encoder.pooled(x, "cls")
        if arch == "vit":  # only the ViT has a class token: a feature of its own
            assert cls.shape == mean.shape and not torch.allclose(cls, mean, atol=1e-3)
        else:  # the others have none and give the mean
            assert torch.allclose(cls, mean, atol=1e-6)
        assert torch.equal(encoder.forward_tokens(x, grid=encoder.grid), tokens)
        # a coarser grid: each token is the mean of the block of tokens it covers (area pooling, row-major)
        half = (rows // 2, cols // 2)
        coarse = encoder.forward_tokens(x, grid=half)
        blocks = tokens.view(3, half[0], 2, half[1], 2, -1).mean(dim=(2, 4)).flatten(1, 2)
        assert coarse.shape == (3, half[0] * half[1], encoder.embed_dim) and torch.allclose(coarse, blocks, atol=1e-5)
        assert torch.allclose(encoder.forward_tokens(x, grid=(1, 1))[:, 0], mean, atol=1e-5)  # one token: the mean
        assert encoder.forward_tokens(x, grid=(8, 8)).shape == (3, 64, encoder.embed_dim)  # finer: resized


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_ids_cover_every_parameter_in_forward_order(arch):
    encoder = _encoder(arch)
    _, n_blocks, blocks, stem, last = EXPECTED[arch]
    ids, top = encoder.layer_ids()
    names = [n for n, _ in encoder.named_parameters()]
    assert set(ids) == set(names) and top == n_blocks + 1
    assert all(0 <= d <= top for d in ids.values())
    assert set(range(top)) <= set(ids.values())  # no depth skipped below the top
    assert ids[stem] == 0 and (last is None or ids[last] == top)
    depths = [{ids[n] for n in names if n.startswith(prefix)} for prefix in blocks]
    assert all(len(d) == 1 for d in depths)  # one depth per block
    assert [d.pop() for d in depths] == list(range(1, n_blocks + 1))  # strictly increasing along the forward pass
    if arch == "hier":  # a patch merge belongs to the block after it
        assert ids["merges.0.reduction.weight"] == ids["stages.1.blocks.0.attn.qkv.weight"]


@pytest.mark.parametrize("arch", ARCHS)
def test_export_round_trips_to_identical_outputs(arch, tmp_path):
    encoder, x = _encoder(arch), _images()
    state = encoder.export_state()
    assert not any(k.startswith("head.") for k in state) and all(v.device.type == "cpu" for v in state.values())
    export_encoder(encoder, str(tmp_path / "enc.safetensors"))
    back = load_encoder(str(tmp_path / "enc.safetensors")).eval()
    assert type(back) is type(encoder) and back.spec == encoder.spec
    assert back.export_state().keys() == state.keys()
    assert all(torch.equal(back.export_state()[k], v) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(back.forward_tokens(x), encoder.forward_tokens(x))
        assert torch.equal(back.pooled(x, "mean"), encoder.pooled(x, "mean"))
        fresh = _encoder(arch, seed=1)  # control: another initialisation gives other features
        assert not torch.allclose(fresh.forward_tokens(x), encoder.forward_tokens(x), atol=1e-3)
    if encoder.spec.timm_name:  # the ViT and the CNN load into timm unchanged
        same = timm.create_model(encoder.spec.timm_name, num_classes=0, **encoder.spec.timm_kwargs())
        same.load_state_dict(state, strict=True)


def test_a_vit_export_leaves_out_its_classifier_and_loading_keeps_it():
    torch.manual_seed(0)
    with_head = MaskedViT(SPECS["vit"], num_classes=5)
    state = with_head.export_state()
    assert "head.weight" in with_head.state_dict() and not any(k.startswith("head.") for k in state)
    head = with_head.head.weight.detach().clone()
    with_head.load_export_state(_encoder("vit", seed=1).export_state(), "test")
    assert torch.equal(with_head.head.weight, head)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_intermediates_returns_the_maps_asked_for(arch):
    encoder, x = _encoder(arch), _images(2)
    with torch.no_grad():
        maps = encoder.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(maps) == 2 and all(m.ndim == 4 and m.shape[0] == 2 for m in maps)
        assert tuple(maps[-1].shape[1:]) == (encoder.embed_dim, *encoder.grid)  # the last one on the final grid
        assert len(encoder.forward_intermediates(x, indices=[0], intermediates_only=True)) == 1


def test_feature_maps_of_every_encoder():
    encoders = {arch: _encoder(arch) for arch in ARCHS}
    x = _images(4)
    maps = feature_maps(encoders, x)
    assert maps.keys() == encoders.keys()
    for arch, picture in maps.items():
        assert picture.shape == (4, 3, *encoders[arch].grid)
        assert 0 <= picture.min() and picture.max() <= 1 and picture.std() > 0
    lazily = feature_maps(((a, e) for a, e in encoders.items()), x)  # (name, encoder) pairs load one at a time
    assert all(torch.equal(lazily[a], maps[a]) for a in ARCHS)
