"""Networks as plain `nn.Module`s; each is built from `conf/model/<name>.yaml`."""

from medlit.models.cnn import BaselineCNN, CustomCNN
from medlit.models.mlp import DenseMLP
from medlit.models.outputs import num_logits
from medlit.models.text import BiLSTM, FastText, TextFFN, TextTransformer
from medlit.models.timm_models import TimmNet

__all__ = [
    "BaselineCNN",
    "BiLSTM",
    "CustomCNN",
    "DenseMLP",
    "FastText",
    "TextFFN",
    "TextTransformer",
    "TimmNet",
    "num_logits",
]
