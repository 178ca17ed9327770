"""The IMDb data module: the aclImdb layout, the vocabulary, the token cache, downloads and clear errors."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from medlit.data import imdb, sampling
from medlit.data.fetch import md5sum
from medlit.data.imdb import IMDBDataModule
from medlit.data.sampling import LengthBucketSampler, LengthOrderSampler
from medlit.data.vocabulary import PAD_ID, UNK_ID
from medlit.errors import ConfigError, DataError
from medlit.training.classifier import Classifier
from medlit.training.preflight import check_model_fits_data
from tests.conftest import compose_config
from tests.synthetic import FILLER_WORDS, write_aclimdb


def make(data_dir: Path, **kwargs) -> IMDBDataModule:
    kwargs.setdefault("url", "http://127.0.0.1:9/never-contacted.tar.gz")
    return IMDBDataModule(data_dir=str(data_dir), **kwargs)


def tokens(dm: IMDBDataModule, row: torch.Tensor) -> list[str]:
    return [dm.tokenizer.id_to_token(i) for i in row.tolist() if i != PAD_ID]


def tar_gz(data_dir: Path, archive: Path, extra: list[tarfile.TarInfo] = ()) -> Path:
    """`data_dir/aclImdb` packed as a .tar.gz, followed by the `extra` members (empty files or links)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data_dir / "aclImdb", arcname="aclImdb")
        for member in extra:
            tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    return archive


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_splits_validation_is_stratified_and_labels_follow_folders(imdb_dir):
    dm = make(imdb_dir, val_fraction=0.25, batch_size=8)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (60, 20, 32)
    assert dm.class_counts.tolist() == [30, 30]
    assert torch.bincount(dm.val_set.labels).tolist() == [10, 10]
    assert dm.class_names == ["negative", "positive"] and dm.num_classes == 2
    assert not set(dm.files["train"]) & set(dm.files["val"])
    for split in ("train", "val", "test"):
        labels = getattr(dm, f"{split}_set").labels.tolist()
        assert labels == [int(path.parent.name == "pos") for path in dm.files[split]], split
    ids, labels = next(iter(dm.val_dataloader()))
    assert ids.dtype == torch.int64 and ids.shape == (8, 200) and labels.dtype == torch.long


def test_the_validation_split_depends_on_its_seed_only(imdb_dir):
    def val_files(**kwargs) -> list[Path]:
        dm = make(imdb_dir, **kwargs)
        dm.setup()
        return dm.files["val"]

    assert val_files(split_seed=1) == val_files(split_seed=1, max_len=50)
    assert val_files(split_seed=1) != val_files(split_seed=2)


def test_html_line_breaks_are_removed_and_words_lower_cased(imdb_dir):
    dm = make(imdb_dir)
    dm.setup()
    vocabulary = dm.tokenizer.get_vocab()
    assert "br" not in vocabulary and "great" in vocabulary
    assert dm.tokenizer.encode("Great<br /><br />FILM!").tokens[:2] == ["great", "film"]


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    write_aclimdb(tmp_path)
    dm = make(tmp_path)
    dm.setup()
    train_file, val_file, test_file = dm.files["train"][0], dm.files["val"][0], dm.files["test"][0]
    train_file.write_text("trainword " * 50)
    val_file.write_text("valword " * 50)
    test_file.write_text("testword " * 50)

    dm = make(tmp_path)
    dm.setup()
    assert dm.tokenised, "changed review files are tokenised again"
    vocabulary = dm.tokenizer.get_vocab()
    assert "trainword" in vocabulary
    assert "valword" not in vocabulary and "testword" not in vocabulary
    assert dm.val_set.ids[dm.files["val"].index(val_file), :50].eq(UNK_ID).all()


def test_vocab_size_keeps_the_most_frequent_training_words(imdb_dir):
    dm = make(imdb_dir, vocab_size=10)
    dm.setup()
    vocabulary = dm.tokenizer.get_vocab()
    assert len(vocabulary) == 10 and vocabulary["[PAD]"] == PAD_ID and vocabulary["[UNK]"] == UNK_ID
    assert set(vocabulary) - {"[PAD]", "[UNK]"} <= set(FILLER_WORDS), "filler words are the most frequent"
    assert int(dm.train_set.ids.max()) < 10


def test_max_len_keeps_the_end_of_a_long_review_and_pads_after_the_last_word(tmp_path):
    write_aclimdb(tmp_path)
    test_pos = tmp_path / "aclImdb" / "test" / "pos"
    (test_pos / "0_10.txt").write_text("great " * 5 + "awful " * 20)
    (test_pos / "1_10.txt").write_text("Great film")

    def encoded(**kwargs) -> tuple[IMDBDataModule, torch.Tensor, torch.Tensor]:
        dm = make(tmp_path, max_len=8, **kwargs)
        dm.setup()
        rows = [dm.files["test"].index(test_pos / name) for name in ("0_10.txt", "1_10.txt")]
        return dm, dm.test_set.ids[rows[0]], dm.test_set.ids[rows[1]]

    dm, long, short = encoded()
    assert dm.train_set.ids.shape[1] == dm.test_set.ids.shape[1] == 8
    assert tokens(dm, long) == ["awful"] * 8
    assert tokens(dm, short) == ["great", "film"] and short[2:].eq(PAD_ID).all()
    dm, long, _ = encoded(truncation_side="right")
    assert tokens(dm, long) == ["great"] * 5 + ["awful"] * 3


def test_a_second_run_reads_the_cache_and_tokenises_nothing(tmp_path, monkeypatch):
    write_aclimdb(tmp_path)
    first = make(tmp_path)
    first.prepare_data()
    first.setup()
    assert first.tokenised and first.cache_path.parent == tmp_path / "cache"

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised although the cache holds these settings")

    monkeypatch.setattr(imdb, "build_vocabulary", no_tokenising)
    monkeypatch.setattr(imdb, "encode", no_tokenising)
    second = make(tmp_path)
    second.prepare_data()
    second.setup()
    assert not second.tokenised and second.cache_path == first.cache_path
    for split in ("train_set", "val_set", "test_set"):
        assert torch.equal(getattr(second, split).ids, getattr(first, split).ids), split
    with pytest.raises(AssertionError, match="tokenised although"):
        make(tmp_path, max_len=50).setup()

    monkeypatch.undo()
    other = make(tmp_path, max_len=50)
    other.setup()
    assert other.cache_path != first.cache_path and other.train_set.ids.shape[1] == 50
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_an_unreadable_cache_is_rebuilt(tmp_path):
    write_aclimdb(tmp_path)
    dm = make(tmp_path)
    dm.setup()
    dm.cache_path.write_bytes(b"truncated")
    again = make(tmp_path)
    again.setup()
    assert again.tokenised and torch.equal(again.test_set.ids, dm.test_set.ids)


def test_a_checkpoint_is_tested_with_its_own_vocabulary(tmp_path):
    write_aclimdb(tmp_path)
    trained = make(tmp_path, vocab_size=12)
    trained.setup()
    saved = io.BytesIO()
    torch.save(trained.state_dict(), saved)
    other = make(tmp_path, vocab_size=20)
    other.setup()
    assert not torch.equal(other.test_set.ids, trained.test_set.ids)
    other.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    assert other.tokenizer.to_str() == trained.tokenizer.to_str()
    assert torch.equal(other.test_set.ids, trained.test_set.ids)
    assert torch.equal(other.val_set.ids, trained.val_set.ids)


def test_a_local_archive_is_extracted_without_downloading(tmp_path, caplog):
    write_aclimdb(tmp_path / "source")
    archive = tar_gz(tmp_path / "source", tmp_path / "data" / "aclImdb_dev.tar.gz")
    dm = make(tmp_path / "data", archive="aclImdb_dev.tar.gz")
    dm.prepare_data()
    assert "not the expected 7c2ac02c03563afcf9b574c7e56c153a" in caplog.text
    dm.setup()
    assert len(dm.test_set) == 32 and archive.exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["aclImdb", "aclImdb_dev.tar.gz", "cache"]


def test_download_checks_the_md5_and_extracts(tmp_path, http_server):
    served, base_url = http_server
    write_aclimdb(tmp_path / "source")
    archive = tar_gz(tmp_path / "source", served / "aclImdb_v1.tar.gz")
    dm = make(
        tmp_path / "data",
        url=f"{base_url}/missing.tar.gz",
        mirrors=[f"{base_url}/aclImdb_v1.tar.gz"],
        md5=md5sum(archive),
    )
    dm.prepare_data()
    assert md5sum(tmp_path / "data" / "aclImdb_v1.tar.gz") == md5sum(archive)
    dm.setup()
    assert (len(dm.train_set) + len(dm.val_set), len(dm.test_set)) == (80, 32)


def test_download_with_a_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, http_server):
    served, base_url = http_server
    write_aclimdb(tmp_path / "source")
    tar_gz(tmp_path / "source", served / "aclImdb_v1.tar.gz")
    dm = make(tmp_path / "data", url=f"{base_url}/aclImdb_v1.tar.gz")  # the official MD5 is expected
    with pytest.raises(DataError, match="does not match the expected 7c2ac02c03563afcf9b574c7e56c153a") as err:
        dm.prepare_data()
    assert str(tmp_path / "data" / "aclImdb") in str(err.value) and "data.url" in str(err.value)
    assert not any((tmp_path / "data").iterdir())


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (member("../escaped.txt"), "member '../escaped.txt' would be written outside"),
        (member("aclImdb/../../escaped.txt"), "member 'aclImdb/../../escaped.txt' would be written outside"),
        (member("aclImdb/up", tarfile.SYMTYPE, "../.."), "link 'aclImdb/up' points outside"),
        (member("aclImdb/passwd", tarfile.LNKTYPE, "/etc/passwd"), "link 'aclImdb/passwd' points outside"),
        (member("aclImdb/same", tarfile.SYMTYPE, "README"), "member 'aclImdb/same' is a link"),
        (member("aclImdb/fifo", tarfile.FIFOTYPE), "member 'aclImdb/fifo' is a device or pipe"),
    ],
    ids=["dot-dot", "inner-dot-dot", "symlink", "hardlink", "inner-symlink", "fifo"],
)
def test_an_archive_member_outside_the_folder_is_refused(tmp_path, http_server, extra, expected):
    served, base_url = http_server
    write_aclimdb(tmp_path / "source")
    archive = tar_gz(tmp_path / "source", served / "aclImdb_v1.tar.gz", extra=[extra])
    data_dir = tmp_path / "deep" / "data"
    dm = make(data_dir, url=f"{base_url}/aclImdb_v1.tar.gz", md5=md5sum(archive))
    with pytest.raises(DataError, match=expected) as err:
        dm.prepare_data()
    assert str(data_dir / "aclImdb_v1.tar.gz") in str(err.value)
    assert [p.name for p in data_dir.iterdir()] == ["aclImdb_v1.tar.gz"], "nothing extracted"
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "deep" / "up").exists()


def test_a_corrupt_archive_is_explained(tmp_path):
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=f"{tmp_path / 'aclImdb_v1.tar.gz'} is neither a zip nor a tar archive"):
        make(tmp_path).prepare_data()
    assert [p.name for p in tmp_path.iterdir()] == ["aclImdb_v1.tar.gz"]


def test_a_truncated_archive_is_explained_and_leaves_nothing(tmp_path):
    write_aclimdb(tmp_path / "source", per_class={"train": 400, "test": 16})
    whole = tar_gz(tmp_path / "source", tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "aclImdb_v1.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"cannot unpack {tmp_path / 'data' / 'aclImdb_v1.tar.gz'}"):
        make(tmp_path / "data").prepare_data()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["aclImdb_v1.tar.gz"]


def test_an_archive_without_aclimdb_is_explained(tmp_path):
    with tarfile.open(tmp_path / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.addfile(member("reviews.txt"), io.BytesIO(b""))
    with pytest.raises(DataError, match="has no aclImdb/ folder at its top level"):
        make(tmp_path).prepare_data()


def test_missing_data_without_network_names_folder_archive_url_and_overrides(tmp_path):
    with pytest.raises(DataError) as err:
        make(tmp_path).prepare_data()
    message = str(err.value)
    for text in (str(tmp_path / "aclImdb"), str(tmp_path / "aclImdb_v1.tar.gz"), "127.0.0.1:9"):
        assert text in message
    assert "data.data_dir" in message and "data.url" in message


def test_an_incomplete_layout_names_the_missing_folder(tmp_path):
    write_aclimdb(tmp_path)
    shutil.rmtree(tmp_path / "aclImdb" / "test" / "neg")
    with pytest.raises(DataError, match=f"{tmp_path / 'aclImdb' / 'test' / 'neg'} not found"):
        make(tmp_path).setup()


def test_a_review_that_is_not_utf8_is_named(tmp_path):
    write_aclimdb(tmp_path)
    bad = tmp_path / "aclImdb" / "train" / "neg" / "3_1.txt"
    bad.write_bytes(b"caf\xe9 awful")
    with pytest.raises(DataError, match=f"{bad} is not a readable UTF-8 review"):
        make(tmp_path).setup()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"val_fraction": 0.0}, "data.val_fraction=0.0 must be between 0 and 1"),
        ({"vocab_size": 2}, "data.vocab_size=2 leaves no room for words"),
        ({"max_len": 0}, "data.max_len=0 must be at least 1"),
        ({"truncation_side": "middle"}, "data.truncation_side='middle'"),
        ({"num_classes": 3}, "data.num_classes=3, but IMDb has 2 classes"),
    ],
)
def test_bad_settings_are_explained(tmp_path, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        make(tmp_path, **kwargs)


def bucket_batches(lengths, batch_size, epoch, world=1, rank=0, monkeypatch=None, pool=50) -> list[list[int]]:
    """The batches one process draws from `LengthBucketSampler` in `epoch` (seed 3), as a DataLoader cuts them."""
    if world > 1:
        monkeypatch.setattr(sampling.dist, "is_initialized", lambda: True)
        monkeypatch.setattr(sampling.dist, "get_world_size", lambda: world)
        monkeypatch.setattr(sampling.dist, "get_rank", lambda: rank)
    order = list(LengthBucketSampler(lengths, batch_size, seed=3, epoch=lambda: epoch, pool=pool))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def test_length_buckets_cover_every_review_once_in_batches_of_similar_length():
    lengths = torch.randint(1, 400, (1000,), generator=torch.Generator().manual_seed(0))
    first = bucket_batches(lengths, 32, epoch=0)
    assert len(first) == 32 and sorted(i for batch in first for i in batch) == list(range(1000))
    assert all(len(batch) == 32 for batch in first[:-1]), "only the last batch is incomplete"
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in first) / len(first)
    assert spread < 40, "a batch holds reviews of similar length"
    assert bucket_batches(lengths, 32, epoch=0) == first, "the order is a function of (seed, epoch)"
    assert bucket_batches(lengths, 32, epoch=1) != first, "every epoch draws other batches"
    in_order = list(LengthOrderSampler(lengths))
    assert sorted(in_order) == list(range(1000)) and lengths[in_order].diff().ge(0).all()


def test_length_buckets_under_ddp_split_the_global_batch_one_process_would_draw(monkeypatch):
    lengths = torch.randint(1, 400, (203,), generator=torch.Generator().manual_seed(1))
    single = bucket_batches(lengths, 16, epoch=2, pool=4)
    ranks = [bucket_batches(lengths, 8, epoch=2, world=2, rank=r, monkeypatch=monkeypatch, pool=4) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, batch in enumerate(single[:-1]):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(batch), step
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(sampling.dist, "get_rank", lambda rank=rank: rank)
        shares.append(list(LengthOrderSampler(lengths)))
    assert [len(share) for share in shares] == [102, 101], "evaluation repeats no review"
    assert sorted(shares[0] + shares[1]) == list(range(203))


def test_bucketed_loaders_serve_every_review_with_its_label(imdb_dir):
    dm = make(imdb_dir, bucket_by_length=True, batch_size=8, eval_batch_size=16)
    dm.setup()
    for split in ("train", "val", "test"):
        dataset = getattr(dm, f"{split}_set")
        batches = list(getattr(dm, f"{split}_dataloader")())
        ids = torch.cat([b[0] for b in batches])
        labels = torch.cat([b[1] for b in batches])
        assert len(ids) == len(dataset)
        order = [dataset.ids.tolist().index(row) for row in ids.tolist()]
        assert labels.tolist() == dataset.labels[order].tolist(), split


@pytest.mark.parametrize("bucket_by_length", [False, True])
def test_training_batches_are_a_function_of_seed_and_epoch(imdb_dir, monkeypatch, bucket_by_length):
    """What a run resumed at epoch 3 draws is what the uninterrupted run drew in its epoch 3."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")

    def batches(epoch: int) -> list[list[int]]:
        dm = make(imdb_dir, bucket_by_length=bucket_by_length, batch_size=8)
        dm.setup()
        dm._current_epoch = lambda: epoch
        return [ids.tolist() for ids, _ in dm.train_dataloader()]

    assert batches(3) == batches(3) and batches(3) != batches(2)


def test_folds_are_stratified_disjoint_and_cover_the_training_reviews(imdb_dir):
    folds = []
    for fold in range(4):
        dm = make(imdb_dir, num_folds=4, fold=fold)
        dm.setup()
        assert torch.bincount(dm.val_set.labels).tolist() == [10, 10]
        assert len(dm.train_set) == 60 and not set(dm.files["train"]) & set(dm.files["val"])
        folds.append(set(dm.files["val"]))
    assert len(set().union(*folds)) == 80, "every training review is validated in exactly one fold"
    assert len(dm.test_set) == 32


def test_an_unknown_fold_is_explained(imdb_dir):
    with pytest.raises(ConfigError, match=r"data.fold=4 is not one of 0..3 \(data.num_folds=4\)"):
        make(imdb_dir, num_folds=4, fold=4).setup()


@pytest.mark.parametrize("model", ["text_ffn", "bilstm", "fasttext", "text_transformer"])
def test_the_preflight_check_passes_text_models_and_names_a_mismatch(imdb_dir, tmp_path, model):
    cfg = compose_config(["data=imdb", f"model={model}", f"data.data_dir={imdb_dir}"], tmp_path)
    example = instantiate(cfg.data).example_input()
    assert example.dtype == torch.long and example.shape == (2, cfg.data.max_len)
    check_model_fits_data(Classifier(instantiate(cfg.model), 2), example, model, "imdb")
    with pytest.raises(ConfigError, match=f"model {model} cannot take the inputs of data imdb"):
        check_model_fits_data(Classifier(instantiate(cfg.model), 2), torch.rand(2, 1, 28, 28), model, "imdb")
