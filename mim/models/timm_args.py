"""Which `timm.create_model` arguments a CNN spec may carry (`model.kwargs`, and an encoder file's metadata).

Kept free of torch and timm imports, so the params models check them too. An encoder file is untrusted input:
arguments that make timm read or fetch files (`checkpoint_path`, `pretrained`, `pretrained_cfg_overlay`, a hub
name) are refused along with anything unknown.
"""

from __future__ import annotations

from typing import Any

TIMM_KWARGS = frozenset({"channels", "stem_width", "stem_type", "cardinality", "base_width", "down_kernel_size",
                         "avg_down", "replace_stem_pool", "block_reduce_first", "act_layer", "norm_layer",
                         "drop_rate", "drop_block_rate", "zero_init_last"})


def check_timm_args(name: Any, kwargs: dict[str, Any]) -> None:
    """A ValueError for a timm model name with a source (`hf-hub:...`, a path) and for any keyword outside
    `TIMM_KWARGS` or with a value other than a number, a string or a list of them."""
    if not isinstance(name, str) or ":" in name or "/" in name:
        raise ValueError(f"name {name!r}: a timm architecture name is expected (no hub or file source)")
    for key, value in kwargs.items():
        if key not in TIMM_KWARGS:
            raise ValueError(f"kwargs.{key}: not an allowed timm.create_model argument (allowed: "
                             f"{', '.join(sorted(TIMM_KWARGS))})")
        items = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(v, int | float | str | bool) for v in items):
            raise ValueError(f"kwargs.{key}: {value!r} is not a number, a string or a list of them")
