"""Word vocabularies for text classifiers, built and applied by Hugging Face `tokenizers` (Rust, parallel).

A tokenizer here is the whole text pipeline in one serialisable object: HTML line breaks removed,
lower-cased words, the vocabulary, truncation and padding. Saving it (`Tokenizer.to_str()`) with a run or a
checkpoint is therefore enough to tokenise new text exactly as the training text was.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from torch import Tensor

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
TRUNCATION_SIDES = ("left", "right")


def word_tokenizer() -> Tokenizer:
    """An empty word-level tokenizer: `<br />` becomes a space, text is lower-cased, and a word is a run of
    letters or digits with inner apostrophes (`don't`, `film's`); punctuation is dropped."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"<br\s*/?>"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+(?:'\w+)*"), behavior="removed", invert=True)
    return tokenizer


def build_vocabulary(texts: Sequence[str], vocab_size: int, max_len: int, truncation_side: str = "left") -> Tokenizer:
    """A tokenizer whose vocabulary is [PAD], [UNK] and the `vocab_size - 2` most frequent words of `texts`.

    Encodings are cut to `max_len` tokens, dropping the start (`truncation_side="left"`, where a review's
    verdict is least likely to be) or the end, and padded with [PAD] (id 0) after the last word.
    """
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation_side must be one of {TRUNCATION_SIDES}, got {truncation_side!r}")
    tokenizer = word_tokenizer()
    trainer = WordLevelTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.enable_truncation(max_len, direction=truncation_side)
    tokenizer.enable_padding(direction="right", pad_id=PAD_ID, pad_token=PAD, length=max_len)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> Tensor:
    """Token ids of shape (len(texts), max_len), int64, tokenised in parallel."""
    encodings = tokenizer.encode_batch_fast(list(texts))
    length = tokenizer.padding["length"]
    ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(encodings), length)
    return torch.from_numpy(ids)
