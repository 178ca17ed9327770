"""Word vectors learned without labels (gensim's word2vec) from reviews, for text networks to start from.

The vectors are learned over the words of a tokenizer's vocabulary, so row `i` belongs to token id `i`; words
outside the vocabulary are read as `[UNK]`, as the networks will read them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from medlit.errors import DataError

log = logging.getLogger(__name__)

ALGORITHMS = ("skipgram", "cbow")


@dataclass(frozen=True)
class WordVectorSettings:
    """How word vectors are pretrained (gensim `Word2Vec`'s arguments of the same meaning)."""

    dim: int = 100  # dimensions of a vector: the network's embedding size
    algorithm: str = "cbow"  # cbow: predict a word from those around it (fast); skipgram: the words around a word
    window: int = 5  # words on each side that count as a word's context
    negative: int = 5  # noise words drawn per context word (negative sampling)
    sample: float = 1e-3  # frequent words are skipped at random above this share of the corpus
    epochs: int = 5  # passes over the corpus
    min_count: int = 1  # words seen fewer times get no vector (their rows stay zero)
    workers: int = 2  # training threads
    seed: int = 0

    @classmethod
    def from_config(cls, config: Mapping) -> WordVectorSettings:
        """Settings from `data.word_vectors`, refusing a key that is not one of them or a value out of range."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise DataError(f"data.word_vectors.{unknown[0]} is not a setting; choose from {sorted(known)}")
        settings = cls(**config)
        if settings.algorithm not in ALGORITHMS:
            raise DataError(f"data.word_vectors.algorithm={settings.algorithm!r}; choose one of {ALGORITHMS}")
        for name in ("dim", "window", "epochs", "min_count", "workers"):
            if getattr(settings, name) < 1:
                raise DataError(f"data.word_vectors.{name}={getattr(settings, name)} must be at least 1")
        return settings


def pretrain_word_vectors(texts: Sequence[str], tokenizer: Tokenizer, settings: WordVectorSettings) -> Tensor:
    """Vectors of shape (vocabulary size, `settings.dim`), float32, learned by word2vec from whole `texts`.

    Each text is cleaned and split into words as `tokenizer` does, but not cut to its length; a word the
    vocabulary lacks becomes `[UNK]`. Rows of tokens with no vector (`[PAD]`, words under `min_count`) are 0.
    """
    from gensim.models import Word2Vec

    start = time.perf_counter()
    whole = Tokenizer.from_str(tokenizer.to_str())
    whole.no_truncation()
    whole.no_padding()
    names = np.array([whole.id_to_token(i) for i in range(whole.get_vocab_size())], dtype=object)
    corpus = [names[encoding.ids].tolist() for encoding in whole.encode_batch_fast(list(texts))]
    tokenised = time.perf_counter()
    gensim_log = logging.getLogger("gensim")
    level = gensim_log.level
    gensim_log.setLevel(logging.WARNING)  # its progress lines, several a second, would bury the run's log
    try:
        model = Word2Vec(
            corpus,
            vector_size=settings.dim,
            sg=int(settings.algorithm == "skipgram"),
            window=settings.window,
            negative=settings.negative,
            sample=settings.sample,
            epochs=settings.epochs,
            min_count=settings.min_count,
            workers=settings.workers,
            seed=settings.seed,
        )
    finally:
        gensim_log.setLevel(level)
    vectors = torch.zeros(len(names), settings.dim)
    found = [i for i, name in enumerate(names) if name in model.wv.key_to_index]
    vectors[found] = torch.from_numpy(model.wv[names[found].tolist()].astype(np.float32))
    log.info(
        "Pretrained %d-dimensional word vectors (%s) on %d reviews, %d words, in %.1f s (tokenising %.1f s); "
        "%d of %d vocabulary words have one",
        settings.dim,
        settings.algorithm,
        len(corpus),
        model.corpus_total_words,
        time.perf_counter() - start,
        tokenised - start,
        len(found),
        len(names),
    )
    return vectors
