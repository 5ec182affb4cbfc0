"""mim: masked image modeling pre-training for vision transformers and CNNs."""

__version__ = "0.1.0"
