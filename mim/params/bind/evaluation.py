"""Evaluation params -> the frozen-feature protocol."""

from __future__ import annotations

from mim.evaluation.evaluate import ProbeConfig
from mim.params.evaluation import EvalParams


def probe_config(params: EvalParams) -> ProbeConfig:
    k, lp = params.knn, params.linear
    return ProbeConfig(pool=params.pool, batch_size=params.batch_size, device=params.device, seed=params.seed,
                       knn_k=k.k, knn_temperature=k.temperature, linear_epochs=lp.epochs,
                       linear_batch_size=lp.batch_size, linear_lr=lp.lr, linear_weight_decay=lp.weight_decay,
                       linear_optimizer=lp.optimizer,
                       label_fractions=tuple(params.label_fractions))
