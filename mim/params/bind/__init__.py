"""Where validated params become library objects, split by concern so that a stage depends only on the binding
it uses (editing a method does not re-run `prepare`): `data` (augmentations, splits), `encoders`, `methods` (and
their targets), `training` (the engine's settings, a whole pre-training run), `evaluation`. The library never
imports `mim.params`; these modules read params and call it. Builders take every setting by keyword with no
default, so the params models are the one place defaults are written."""
