"""What text networks start from: word vectors pretrained on unlabelled reviews (cached), and fastText's naive
Bayes n-gram weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medlit.data import imdb
from medlit.data.embeddings import WordVectorSettings, pretrain_word_vectors
from medlit.data.imdb import IMDBDataModule
from medlit.data.vocabulary import PAD_ID, build_vocabulary
from medlit.errors import ConfigError, DataError
from medlit.models.text import BiLSTM, FastText, TextFFN, TextTransformer
from medlit.training.run import train
from tests.conftest import best_checkpoint
from tests.synthetic import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS, synthetic_review, write_aclimdb
from tests.test_security import flip_byte_in

UNLABELLED = 60


@pytest.fixture(scope="module")
def unsup_dir(tmp_path_factory) -> Path:
    """40 training reviews per class in 10 films, 8 test reviews per class, 60 unlabelled reviews."""
    return write_aclimdb(
        tmp_path_factory.mktemp("unsup"), per_class={"train": 40, "test": 8}, films=10, unlabelled=UNLABELLED
    )


def test_a_run_pretrains_once_on_training_and_unlabelled_reviews_and_the_next_reuses_them(
    train_config, unsup_dir, tmp_path, monkeypatch, caplog
):
    calls: list[list[str]] = []

    def counted(texts, tokenizer, settings):
        calls.append(list(texts))
        return pretrain_word_vectors(texts, tokenizer, settings)

    monkeypatch.setattr(imdb, "pretrain_word_vectors", counted)
    run = [
        "data=imdb", f"data.data_dir={unsup_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.max_len=32",
        "data.batch_size=16", "data.use_unlabelled=true", "data.word_vectors={dim:8,epochs:3,workers:1}",
        "model=bilstm", "model.embed_dim=8", "model.hidden=8", "model.hidden2=8", "trainer.max_epochs=1",
        "optimizer.lr=1e-7", "logger=csv",
    ]  # fmt: skip
    train(train_config(*run))
    assert len(calls) == 1, "the first run pretrains once"
    dm = IMDBDataModule(data_dir=str(unsup_dir), cache_dir=str(tmp_path / "cache"), max_len=32)
    dm.setup()
    corpus = set(calls[0])
    train_texts = {path.read_text() for path in dm.files["train"]}
    unlabelled = {path.read_text() for path in (unsup_dir / "aclImdb" / "train" / "unsup").iterdir()}
    assert len(calls[0]) == len(dm.files["train"]) + UNLABELLED and corpus == train_texts | unlabelled
    assert not corpus & {path.read_text() for path in dm.files["val"] + dm.files["test"]}, "held-out text"

    (vectors_file,) = (tmp_path / "cache").glob("imdb_word_vectors_*.pt")
    vectors = torch.load(vectors_file, weights_only=True)["vectors"]
    embedding = torch.load(best_checkpoint(tmp_path / "run"), weights_only=True)["state_dict"]["net.embedding.weight"]
    words = dm.tokenizer.get_vocab_size()
    assert vectors.shape == (words, 8) and vectors[2:].abs().sum(dim=1).gt(0).all()
    assert torch.allclose(embedding[2:words], vectors[2:], atol=1e-4), "the network started from the vectors"

    train(train_config(*run))
    assert len(calls) == 1, "a second run reads the vectors from the cache"
    other = IMDBDataModule(
        data_dir=str(unsup_dir), cache_dir=str(tmp_path / "cache"), max_len=32, use_unlabelled=True,
        word_vectors={"dim": 8, "epochs": 3, "workers": 1, "window": 2},
    )  # fmt: skip
    assert other.pretrained_word_vectors().shape == (words, 8) and len(calls) == 2, "other settings, other vectors"

    flip_byte_in(vectors_file, vectors[5].numpy().tobytes())
    with caplog.at_level(logging.WARNING):
        train(train_config(*run))
    assert "Pretraining again: the cache" in caplog.text and "does not match its digest" in caplog.text
    assert len(calls) == 3, "damaged vectors are pretrained again, not used"


def test_vectors_of_words_used_alike_are_close():
    rng = np.random.default_rng(0)
    texts = [synthetic_review(i % 2, rng) for i in range(400)]
    tokenizer = build_vocabulary(texts, vocab_size=100, max_len=8)
    settings = WordVectorSettings(dim=16, epochs=20, window=3, workers=1, sample=0)
    vectors = torch.nn.functional.normalize(pretrain_word_vectors(texts, tokenizer, settings), dim=1)
    assert vectors[PAD_ID].eq(0).all(), "[PAD] never occurs and keeps a zero row"

    def similarity(a: tuple[str, ...], b: tuple[str, ...]) -> float:
        rows_a = vectors[[tokenizer.token_to_id(w) for w in a]]
        rows_b = vectors[[tokenizer.token_to_id(w) for w in b]]
        cosines = rows_a @ rows_b.T
        if a == b:
            return cosines[~torch.eye(len(a), dtype=torch.bool)].mean().item()
        return cosines.mean().item()

    within = (similarity(POSITIVE_WORDS, POSITIVE_WORDS) + similarity(NEGATIVE_WORDS, NEGATIVE_WORDS)) / 2
    across = similarity(POSITIVE_WORDS, NEGATIVE_WORDS)
    assert within > across + 0.3, (within, across)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"use_unlabelled": True}, "data.use_unlabelled=true: .* data.word_vectors is not set"),
        ({"word_vectors": {"size": 8}}, "data.word_vectors.size is not a setting; choose from"),
        ({"word_vectors": {"algorithm": "glove"}}, "data.word_vectors.algorithm='glove'; choose one of"),
        ({"word_vectors": {"epochs": 0}}, "data.word_vectors.epochs=0 must be at least 1"),
    ],
)
def test_bad_pretraining_settings_are_explained(tmp_path, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        IMDBDataModule(data_dir=str(tmp_path), **kwargs)


def test_unlabelled_reviews_that_are_missing_are_named(tmp_path):
    write_aclimdb(tmp_path, per_class={"train": 8, "test": 2})
    dm = IMDBDataModule(data_dir=str(tmp_path), use_unlabelled=True, word_vectors={"dim": 4})
    with pytest.raises(DataError, match=f"{tmp_path / 'aclImdb' / 'train' / 'unsup'} not found: data.use_unl"):
        dm.pretrained_word_vectors()


@pytest.mark.parametrize(
    "net",
    [
        lambda: TextFFN(vocab_size=10, num_classes=2, max_len=4, embed_dim=3),
        lambda: BiLSTM(vocab_size=10, num_classes=2, embed_dim=3),
        lambda: TextTransformer(vocab_size=10, num_classes=2, max_len=4, d_model=3, heads=1),
        lambda: FastText(vocab_size=10, num_classes=2, embed_dim=3, buckets=20),
    ],
    ids=["text_ffn", "bilstm", "text_transformer", "fasttext"],
)
def test_every_text_network_starts_from_word_vectors_where_it_has_them(net):
    model = net()
    embedding = model.embedding.weight
    before = embedding.detach().clone()
    vectors = torch.arange(30, dtype=torch.float32).view(10, 3) + 1
    vectors[[PAD_ID, 7]] = 0  # [PAD], and a word the pretraining never saw
    model.load_word_vectors(vectors)
    seen = [i for i in range(10) if i not in (PAD_ID, 7)]
    assert torch.equal(embedding[seen], vectors[seen])
    assert torch.equal(embedding[7], before[7]) and embedding[PAD_ID].eq(0).all()
    assert torch.equal(embedding[10:], before[10:]), "n-gram buckets keep their initial rows"
    with pytest.raises(ConfigError, match=r"word vectors of shape \(10, 5\), but the network's embedding has 3"):
        model.load_word_vectors(torch.ones(10, 5))


def test_naive_bayes_weights_are_log_count_ratios_of_the_reviews_holding_each_word():
    net = FastText(vocab_size=7, num_classes=2, embed_dim=2, ngrams=1, naive_bayes=True, alpha=1.0)
    ids = torch.tensor([[2, 3, 3, 5], [2, 4, 0, 0]])
    net.initialise_from_training_data(ids, torch.tensor([1, 0]))
    # reviews holding each word, plus 1: positive 2:2, 3:2, 4:1, 5:2 (of 7); negative 2:2, 3:1, 4:2, 5:1 (of 6)
    r2, r3, r4 = math.log(6 / 7), math.log(12 / 7), math.log(3 / 7)
    expected = [0.0, 0.0, r2, r3, r4, r3, 0.0]  # [PAD], [UNK] and word 6 never seen
    assert net.log_ratios.tolist() == pytest.approx(expected, abs=1e-6)
    assert "log_ratios" in net.state_dict(), "checkpoints keep the weights"

    table, out = net.embedding.weight, net.out
    with torch.no_grad():
        got = net(torch.tensor([[3, 3, 3, 4], [6, 0, 0, 0]]))
        counted = (3 * r3 * table[3] + r4 * table[4]) / 4
        assert torch.allclose(got[0], out(counted), atol=1e-6)
        assert torch.allclose(got[1], out.bias), "words never seen in training weigh nothing"
        net.binary = True
        binary = (r3 * table[3] + r4 * table[4]) / 2
        assert torch.allclose(net(torch.tensor([[3, 3, 3, 4]]))[0], out(binary), atol=1e-6)


def test_a_naive_bayes_run_weighs_sentiment_words_up_and_filler_down(train_config, tmp_path):
    run = [
        "data=imdb", "model=fasttext", "model.naive_bayes=true", "model.binary=true", "model.ngrams=1",
        "data.max_len=32", "data.batch_size=16", "trainer.max_epochs=2", "optimizer.lr=0.05", "logger=csv",
    ]  # fmt: skip
    train(train_config(*run))
    checkpoint = torch.load(best_checkpoint(tmp_path / "run"), weights_only=True)
    ratios = checkpoint["state_dict"]["net.log_ratios"]
    vocabulary = imdb.Tokenizer.from_str(checkpoint["IMDBDataModule"]["tokenizer"]).get_vocab()
    assert min(ratios[vocabulary[w]] for w in POSITIVE_WORDS) > 1
    assert max(ratios[vocabulary[w]] for w in NEGATIVE_WORDS) < -1
    assert max(abs(ratios[vocabulary[w]]) for w in FILLER_WORDS if w in vocabulary) < 0.5
