"""Frozen-encoder evaluation: feature extraction, weighted k-NN, linear probe."""

from mim.evaluation.evaluate import ProbeConfig, eval_subsets, evaluate_encoder, evaluate_pixels
from mim.evaluation.features import extract_features, pixel_features
from mim.evaluation.knn import knn_accuracy, knn_predict
from mim.evaluation.linear import linear_probe

__all__ = ["ProbeConfig", "eval_subsets", "evaluate_encoder", "evaluate_pixels", "extract_features", "knn_accuracy",
           "knn_predict", "linear_probe", "pixel_features"]
