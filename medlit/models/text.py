"""Networks over token ids (B, L), padded with `PAD_ID` after the last word: IMDb's sentiment classifiers.

The recurrent, bag-of-n-grams and attention models ignore padding (states read at the last word, bags
without [PAD], attention masks), so a review's prediction does not depend on how much padding follows it.
Every network can start its word embedding from pretrained word vectors (`load_word_vectors`), which the
classifier passes in from the data module before training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from medlit.data.vocabulary import PAD_ID
from medlit.errors import ConfigError
from medlit.models.outputs import num_logits


def small_init(embedding: nn.Embedding | nn.EmbeddingBag) -> nn.Embedding | nn.EmbeddingBag:
    """Initialise an embedding table small (uniform ±0.05, as Keras does), keeping the [PAD] row at zero.

    PyTorch's default N(0, 1) rows are large next to what training moves them by, so sentiment words start
    buried in noise; with small rows the flattened feed-forward network learns in one epoch, not ten.
    """
    with torch.no_grad():
        embedding.weight.uniform_(-0.05, 0.05)
        embedding.weight[PAD_ID].zero_()
    return embedding


def word_embedding(vocab_size: int, dim: int) -> nn.Embedding:
    return small_init(nn.Embedding(vocab_size, dim, padding_idx=PAD_ID))


def copy_word_vectors(embedding: nn.Embedding | nn.EmbeddingBag, vectors: Tensor) -> None:
    """Start the first `len(vectors)` rows of `embedding` (the vocabulary's) from pretrained `vectors`.

    Rows that are all zero (a token the pretraining never saw) keep their initial values; [PAD] stays zero.
    """
    rows, dim = embedding.weight.shape
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ConfigError(
            f"pretrained word vectors of shape {tuple(vectors.shape)}, but the network's embedding has {dim} "
            f"dimensions: set data.word_vectors.dim to the model's embedding size"
        )
    if len(vectors) > rows:
        raise ConfigError(f"{len(vectors)} pretrained word vectors for an embedding of {rows} rows (data.vocab_size?)")
    with torch.no_grad():
        seen = vectors.abs().sum(dim=1) > 0
        seen[PAD_ID] = False
        target = embedding.weight[: len(vectors)]
        target[seen] = vectors[seen].to(target)


def sequence_lengths(ids: Tensor) -> Tensor:
    """Number of tokens before the padding of each row, at least 1 (an empty review reads one [PAD])."""
    return (ids != PAD_ID).sum(dim=1).clamp(min=1)


def align_end(x: Tensor, ids: Tensor) -> Tensor:
    """Rotate each row of `x` (B, L, ...) so that the words of `ids` (B, L) come last and their padding first."""
    steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
    index = (steps + (ids != PAD_ID).sum(dim=1, keepdim=True)) % ids.shape[1]
    return x.gather(1, index.view(*index.shape, *([1] * (x.ndim - 2))).expand_as(x))


class TextFFN(nn.Module):
    """Embedding -> flatten -> dense ReLU layers -> out: the reference feed-forward network.

    Flattening gives every position of the `max_len` window its own weights. Each review is aligned to the
    end of the window first (padding in front, as in the reference study), so the same weights always see
    a review's closing words, where its verdict usually is, whatever its length. Dropout on the flattened
    embeddings and hidden layers keeps the millions of weights from memorising the training reviews.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        embed_dim: int = 128,
        hidden: Sequence[int] = (64, 32),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, embed_dim)
        sizes = [max_len * embed_dim, *hidden]
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        for a, b in pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(sizes[-1], num_logits(num_classes)))
        self.layers = nn.Sequential(*layers)

    def load_word_vectors(self, vectors: Tensor) -> None:
        copy_word_vectors(self.embedding, vectors)

    def forward(self, ids: Tensor) -> Tensor:
        # aligned after the embedding, so the embedding (where attributions are taken) sees words in place
        return self.layers(align_end(self.embedding(ids), ids))


def reverse_each(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first `lengths[b]` steps of each row of `x` (B, L, ...), leaving the padding at the end."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *([1] * (x.ndim - 2))).expand_as(x))


class BiLSTM(nn.Module):
    """Embedding -> bidirectional LSTM -> LSTM -> dropout -> out: the reference recurrent network.

    Padding is kept out of every state that reaches the output: the forward LSTMs read padding only after
    the last word, the backward LSTM reads each review reversed within its length (padding still last), and
    the output is the second LSTM's state at each review's last word. This is what packed sequences
    compute, on padded tensors, which run several times faster on CPUs than packed variable-length batches.
    `pooling="max"` takes the maximum of the second LSTM's outputs over the words instead of its last
    state, so a sentiment expressed early in a long review need not survive hundreds of steps.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 64,
        hidden: int = 64,
        hidden2: int = 32,
        dropout: float = 0.5,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        if pooling not in ("last", "max"):
            raise ValueError(f"pooling must be 'last' or 'max', got {pooling!r}")
        self.pooling = pooling
        self.embedding = word_embedding(vocab_size, embed_dim)
        self.forward_lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.backward_lstm = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(2 * hidden, hidden2, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden2, num_logits(num_classes))

    def load_word_vectors(self, vectors: Tensor) -> None:
        copy_word_vectors(self.embedding, vectors)

    def forward(self, ids: Tensor) -> Tensor:
        lengths = sequence_lengths(ids)
        x = self.dropout(self.embedding(ids[:, : int(lengths.max())]))
        forward, _ = self.forward_lstm(x)
        backward, _ = self.backward_lstm(reverse_each(x, lengths))
        both = self.dropout(torch.cat([forward, reverse_each(backward, lengths)], dim=2))
        states, _ = self.lstm2(both)
        if self.pooling == "max":
            words = torch.arange(states.shape[1], device=ids.device) < lengths.unsqueeze(1)
            summary = states.masked_fill(~words.unsqueeze(2), float("-inf")).amax(dim=1)
        else:
            summary = states[torch.arange(len(ids), device=ids.device), lengths - 1]
        return self.out(self.dropout(summary))


class FastText(nn.Module):
    """The average of word and hashed word n-gram embeddings, then a linear layer (fastText, Joulin et al.).

    Word n-grams up to `ngrams` words long are hashed into `buckets` extra embedding rows after the
    vocabulary; an n-gram that reaches into the padding counts as padding and is left out of the average.
    `binary=True` counts each word and n-gram once per review, however often it occurs.
    `naive_bayes=True` weighs each one by its log-count ratio over the training reviews, as NBSVM does (Wang
    & Manning 2012): log P(n-gram | positive) / P(n-gram | negative), with both class distributions over
    reviews containing it, add-`alpha` smoothed; a phrase that tells the classes apart enters the average
    with a large weight and one that does not with almost none. The ratios are a buffer of the model, set
    from the training split by `initialise_from_training_data` before training and kept in checkpoints.
    `sparse=True` gives the table sparse gradients, so a step updates only the rows a batch uses: millions
    of buckets then cost no more per step than thousands (with an optimiser that takes sparse gradients,
    e.g. `optimizer=adagrad` or `sgd`; Adam does not).
    """

    HASH_MULTIPLIER = 116_049_371  # fastText's n-gram hash constant

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 64,
        ngrams: int = 2,
        buckets: int = 1 << 18,
        dropout: float = 0.0,
        sparse: bool = False,
        binary: bool = False,
        naive_bayes: bool = False,
        alpha: float = 1.0,
    ) -> None:
        super().__init__()
        if ngrams < 1:
            raise ValueError(f"ngrams must be at least 1, got {ngrams}")
        if naive_bayes and num_classes != 2:
            raise ConfigError(f"model.naive_bayes=true weighs n-grams between 2 classes, not {num_classes}")
        if alpha <= 0:
            raise ConfigError(f"model.alpha={alpha} must be positive (the counts' smoothing)")
        self.vocab_size, self.ngrams, self.buckets = vocab_size, ngrams, buckets
        self.binary, self.naive_bayes, self.alpha = binary, naive_bayes, alpha
        rows = vocab_size + (buckets if ngrams > 1 else 0)
        self.embedding = small_init(nn.EmbeddingBag(rows, embed_dim, mode="sum", padding_idx=PAD_ID, sparse=sparse))
        if naive_bayes:
            self.register_buffer("log_ratios", torch.ones(rows))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, num_logits(num_classes))

    def ngram_ids(self, ids: Tensor) -> Tensor:
        """Word ids followed by the embedding rows of the row's 2..ngrams-grams ([PAD] where padded)."""
        ids = ids.long()
        parts = [ids]
        length = ids.shape[1]
        for n in range(2, min(self.ngrams, length) + 1):
            hashed = torch.zeros_like(ids[:, n - 1 :])
            for k in range(n):
                hashed = (hashed * self.HASH_MULTIPLIER + ids[:, k : length - n + 1 + k]) % self.buckets
            inside = ids[:, n - 1 :] != PAD_ID  # right padding: an n-gram is real if its last word is
            parts.append(torch.where(inside, self.vocab_size + hashed, PAD_ID))
        return torch.cat(parts, dim=1)

    def bag_ids(self, ids: Tensor, binary: bool | None = None) -> Tensor:
        """`ngram_ids`, with repeats within a row replaced by [PAD] when counting each one once."""
        rows = self.ngram_ids(ids)
        if not (self.binary if binary is None else binary):
            return rows
        rows, _ = rows.sort(dim=1)
        repeated = torch.zeros_like(rows, dtype=torch.bool)
        repeated[:, 1:] = rows[:, 1:] == rows[:, :-1]
        return rows.masked_fill(repeated, PAD_ID)

    def load_word_vectors(self, vectors: Tensor) -> None:
        copy_word_vectors(self.embedding, vectors)

    @torch.no_grad()
    def initialise_from_training_data(self, ids: Tensor, labels: Tensor, chunk: int = 1024) -> None:
        """Set the n-gram log-count ratios from the training reviews `ids` (N, L) and their labels (N,)."""
        if not self.naive_bayes:
            return
        counts = torch.zeros(2, len(self.log_ratios), dtype=torch.float64)
        for rows, targets in zip(ids.split(chunk), labels.split(chunk), strict=True):
            rows = self.bag_ids(rows.to(self.log_ratios.device), binary=True)
            for label in (0, 1):
                present = rows[targets.to(rows.device) == label].flatten()
                counts[label] += torch.bincount(present, minlength=counts.shape[1]).to(counts)
        counts[:, PAD_ID] = 0
        seen = counts.sum(dim=0) > 0
        smoothed = (counts + self.alpha) * seen
        share = smoothed / smoothed.sum(dim=1, keepdim=True)
        ratios = (share[1] / share[0]).log().where(seen, 0.0)
        self.log_ratios.copy_(ratios.to(self.log_ratios))

    def forward(self, ids: Tensor) -> Tensor:
        rows = self.bag_ids(ids)
        real = (rows != PAD_ID).to(self.embedding.weight.dtype)
        weights = real / real.sum(dim=1, keepdim=True).clamp(min=1)  # the mean over the row's n-grams
        if self.naive_bayes:
            weights = weights * self.log_ratios[rows].to(weights)
        return self.out(self.dropout(self.embedding(rows, per_sample_weights=weights)))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """The fixed sine/cosine position encodings of "Attention is all you need", shape (length, dim)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class TextTransformer(nn.Module):
    """A small Transformer encoder: embeddings plus sine/cosine positions, pre-norm self-attention layers
    that ignore [PAD] (key padding mask), the mean of the words' outputs, then a linear layer.

    Each batch is cut to its longest review first, so short batches cost less than `max_len` would.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = word_embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, num_logits(num_classes))

    def load_word_vectors(self, vectors: Tensor) -> None:
        copy_word_vectors(self.embedding, vectors)

    def forward(self, ids: Tensor) -> Tensor:
        length = int(sequence_lengths(ids).max())
        if length > len(self.positions):
            raise ValueError(f"reviews of {length} tokens, but the model encodes at most {len(self.positions)}")
        ids = ids[:, :length]
        padding = ids == PAD_ID
        padding[:, 0] = False  # an empty review attends to its first position rather than to nothing (NaN)
        x = self.embedding(ids) * math.sqrt(self.embedding.embedding_dim) + self.positions[:length]
        x = self.encoder(self.dropout(x), src_key_padding_mask=padding)
        words = (~padding).unsqueeze(-1).to(x.dtype)
        return self.out((x * words).sum(dim=1) / words.sum(dim=1))
