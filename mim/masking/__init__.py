"""Token masks for masked image modeling.

Every generator is a pure function drawing from an explicit `torch.Generator`, and every sample of
a batch masks exactly the same number of tokens. Mask kinds:

- random (MAE): `random_masking`, `masking_from_noise`; uniformly random tokens.
- block-wise (BEiT): `block_masking`, `block_masking_ratio`; rectangular blocks of tokens.
- unit (SimMIM): `unit_masking`; random square pixel units tiled onto the token grid.
- pictures: `picture_masking`; one seeded mask shared by every method's reconstruction grid.
- from a boolean mask: `token_mask_from_bool`.
- replacement (CCViT): `choose_unmasked`; an exact count of tokens among the unmasked ones.
- disjoint views (DMJD): `disjoint_views`; V masks per image with disjoint visible sets, `expand_views`.
- mixing (MixMIM): `mixing_map`, `mix`, `combine_predictions`; one source map per batch, pairs (i, B-1-i).

All return a `TokenMask` (`ids_keep`, `ids_restore`, `mask` with 1 = masked); `gather_tokens`,
`restore_tokens` and `masked_mean` apply it; `count_for_ratio` turns a ratio into a token count by a `MaskCount`
rule.
"""

from mim.masking.blockwise import block_masking, block_masking_ratio
from mim.masking.checks import MaskCount, count_for_ratio
from mim.masking.mixing import SourceMap, check_pairs, combine_predictions, mix, mixing_map
from mim.masking.ops import gather_tokens, masked_mean, restore_tokens
from mim.masking.random import masking_from_noise, random_masking
from mim.masking.replace import MaskAndReplace, choose_unmasked
from mim.masking.types import TokenMask, token_mask_from_bool
from mim.masking.units import picture_masking, unit_masking
from mim.masking.views import MultiViewMask, disjoint_views, expand_views, expected_coverage, per_view

__all__ = [
    "count_for_ratio",
    "MaskCount",
    "MultiViewMask",
    "disjoint_views",
    "expand_views",
    "per_view",
    "expected_coverage",
    "SourceMap",
    "check_pairs",
    "combine_predictions",
    "mix",
    "mixing_map",
    "MaskAndReplace",
    "choose_unmasked",
    "TokenMask",
    "block_masking",
    "block_masking_ratio",
    "gather_tokens",
    "masked_mean",
    "masking_from_noise",
    "random_masking",
    "restore_tokens",
    "token_mask_from_bool",
    "unit_masking",
    "picture_masking",
]
