"""Benchmarks against peers measured in the same run (`mim bench ...`): training speed against transformers'
ViTMAE (`pretrain`, with the weight converter `mim.models.convert`), the tokenizer against scikit-learn (`tokenizer`),
DMJD against its single-view counterpart (`dmjd`), Img2Vec's teacher cache (`teacher_cache`)."""
