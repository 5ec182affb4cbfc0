"""Frozen-encoder evaluation: feature extraction, weighted k-NN, linear probe."""

from mim.evaluation.evaluate import evaluate_encoder, load_eval_data
from mim.evaluation.features import extract_features, pixel_features
from mim.evaluation.knn import knn_accuracy, knn_predict
from mim.evaluation.linear import linear_probe

__all__ = ["evaluate_encoder", "extract_features", "knn_accuracy", "knn_predict", "linear_probe",
           "load_eval_data", "pixel_features"]
