"""Encoders behind one contract (`encoder.Encoder`: the ViT, the ResNet-style CNN, MixMIM's hierarchical encoder),
decoders and attention, exported and loaded as safetensors (`export`)."""
