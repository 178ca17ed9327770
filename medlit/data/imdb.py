"""The Large Movie Review Dataset (IMDb, Maas et al. 2011): positive vs negative reviews, tokenised once."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from medlit.data.archive import unpack
from medlit.data.base import ClassificationDataModule
from medlit.data.embeddings import WordVectorSettings, pretrain_word_vectors
from medlit.data.fetch import fetch, md5sum
from medlit.data.integrity import save_atomically, unseal
from medlit.data.sampling import EpochSampler, LengthBucketSampler, LengthOrderSampler
from medlit.data.splits import cross_validation_fold, mixed_grouped_split, stratified_split
from medlit.data.vocabulary import PAD_ID, TRUNCATION_SIDES, UNK_ID, build_vocabulary, encode, word_tokenizer
from medlit.errors import DataError, DownloadError

log = logging.getLogger(__name__)

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
FOLDER = "aclImdb"
CLASS_FOLDERS = ("neg", "pos")  # label 0, label 1
SPLITS = ("train", "val", "test")
UNLABELLED = "unsup"  # train/unsup: reviews without a label
_REVIEW_ID = re.compile(r"^(\d+)_")  # <id>_<rating>.txt: line <id> of urls_<class>.txt names its film


class TokenDataset(Dataset):
    """Token ids of shape (N, max_len) with integer labels, kept in memory."""

    def __init__(self, ids: Tensor, labels: Tensor) -> None:
        if ids.ndim != 2 or len(ids) != len(labels):
            raise ValueError(f"expected ids (N, L) and N labels, got {tuple(ids.shape)} and {len(labels)}")
        self.ids, self.labels = ids, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.ids[index], self.labels[index]


class IMDBDataModule(ClassificationDataModule):
    """IMDb reviews from the original `aclImdb/{train,test}/{neg,pos}/*.txt` layout under `data_dir`.

    `prepare_data` extracts `<data_dir>/<archive>` if `aclImdb/` is not there, downloading the archive first
    (from `url` or `mirrors`, MD5-checked) if it is missing too. Validation is a stratified, seeded
    `val_fraction` of the training reviews, or with `num_folds` fold `fold` of stratified folds over them.
    With `group_by_film` (and the archive's `train/urls_{neg,pos}.txt`, which name each review's film), a
    film's reviews all fall on one side, as the official test split shares no film with training; without
    those files the split is by review, and a log line says so. The vocabulary (the `vocab_size` most
    frequent words) is learned from the remaining training reviews only; every review becomes `max_len`
    token ids.

    `word_vectors` (settings of `WordVectorSettings`) pretrains word vectors for the vocabulary, without
    labels, on the training reviews (not the validation ones) and, with `use_unlabelled`, the archive's
    50,000 unlabelled reviews (`train/unsup`); the classifier starts its network's embedding from them
    (`pretrained_word_vectors`). They are pretrained when a fit prepares the data and cached beside the
    token ids, keyed by their settings, the token cache and the unlabelled review files.

    Tokenised splits are cached in `cache_dir` under a key made of these settings and the review files'
    names, sizes and modification times, so a second run reads them back instead of tokenising. The
    tokenizer is written to the run directory as `tokenizer.json` and stored in checkpoints; a checkpoint
    tested with a different configured vocabulary re-tokenises the reviews with its own.

    `bucket_by_length=True` batches reviews of similar length (`LengthBucketSampler`, drawn from
    (seed, epoch) like every training order), which makes the recurrent and attention models, which cut
    each batch to its longest review, much cheaper per epoch; evaluation then runs in order of length.
    """

    def __init__(
        self,
        data_dir: str,
        archive: str = "aclImdb_v1.tar.gz",
        url: str | None = None,
        mirrors: Sequence[str] = (),
        md5: str | None = None,
        cache_dir: str | None = None,
        val_fraction: float = 0.2,
        split_seed: int = 42,
        vocab_size: int = 10_000,
        max_len: int = 200,
        truncation_side: str = "left",
        bucket_by_length: bool = False,
        group_by_film: bool = True,
        use_unlabelled: bool = False,
        word_vectors: Mapping | None = None,
        num_classes: int | None = None,
        **loader_kwargs,
    ) -> None:
        super().__init__(split_seed=split_seed, **loader_kwargs)
        if not 0 < val_fraction < 1:
            raise DataError(f"data.val_fraction={val_fraction} must be between 0 and 1")
        if vocab_size < 3:
            raise DataError(f"data.vocab_size={vocab_size} leaves no room for words next to [PAD] and [UNK]")
        if max_len < 1:
            raise DataError(f"data.max_len={max_len} must be at least 1")
        if truncation_side not in TRUNCATION_SIDES:
            raise DataError(f"data.truncation_side={truncation_side!r}; choose one of {TRUNCATION_SIDES}")
        self.class_names = ["negative", "positive"]
        if num_classes is not None and num_classes != len(self.class_names):
            raise DataError(f"data.num_classes={num_classes}, but IMDb has 2 classes (negative, positive)")
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / FOLDER
        self.archive = self.data_dir / archive
        self.urls = [url or URL, *mirrors]
        self.md5 = md5 or MD5
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "cache"
        self.val_fraction = val_fraction
        self.vocab_size, self.max_len, self.truncation_side = vocab_size, max_len, truncation_side
        self.bucket_by_length = bucket_by_length
        self.group_by_film = group_by_film
        if use_unlabelled and word_vectors is None:
            raise DataError(
                "data.use_unlabelled=true: the unlabelled reviews serve to pretrain word vectors, but "
                "data.word_vectors is not set (e.g. data.word_vectors={dim:100})"
            )
        self.use_unlabelled = use_unlabelled
        self.word_vector_settings = None if word_vectors is None else WordVectorSettings.from_config(word_vectors)
        self.tokenizer: Tokenizer | None = None
        self._checkpoint_tokenizer: Tokenizer | None = None
        self.files: dict[str, list[Path]] = {}
        self.cache_path: Path | None = None
        self.url_files: list[tuple[str, tuple[int, int]]] | None = None  # the urls files a split was grouped by
        self.tokenised = False  # whether this module tokenised reviews rather than reading its cache
        self.pretrained = False  # whether this module pretrained word vectors rather than reading its cache

    def prepare_data(self) -> None:
        if not self.root.exists():
            self._extract()
        self._tokenised_splits(load=False)
        trainer = self.trainer
        if self.word_vector_settings is not None and trainer is not None and trainer.state.fn == "fit":
            self._word_vectors(load=False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self._tokenised_splits()
        self.tokenizer = Tokenizer.from_str(data["tokenizer"])
        self.train_set = TokenDataset(data["train_ids"], data["train_labels"])
        self.val_set = TokenDataset(data["val_ids"], data["val_labels"])
        self.test_set = TokenDataset(data["test_ids"], data["test_labels"])
        self._save_tokenizer_with_run()

    def pretrained_word_vectors(self) -> Tensor | None:
        """Word vectors (vocabulary size, dim) for the network's embedding to start from, read from the cache
        or pretrained now; None without `data.word_vectors`."""
        return None if self.word_vector_settings is None else self._word_vectors()

    def state_dict(self) -> dict:
        """The tokenizer (vocabulary, cleaning, max_len), so a checkpoint is tested on its own vocabulary."""
        return {"tokenizer": self.tokenizer.to_str()} if self.tokenizer is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("tokenizer")
        if saved is None or (self.tokenizer is not None and saved == self.tokenizer.to_str()):
            return
        log.info("Tokenising the reviews with the checkpoint's vocabulary")
        self._checkpoint_tokenizer = Tokenizer.from_str(saved)
        if self.train_set is not None:
            self.train_set = None
            self.setup()

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Token ids shaped like this data's batches: `max_len` words, then a review half as long."""
        ids = torch.full((batch_size, self.max_len), UNK_ID, dtype=torch.long)
        ids[1:, max(1, self.max_len // 2) :] = PAD_ID
        return ids

    def _train_sampler(self, dataset: TokenDataset, seed: int) -> EpochSampler:
        if not self.bucket_by_length:
            return super()._train_sampler(dataset, seed)
        return LengthBucketSampler(_lengths(dataset), self.batch_size, seed, self._current_epoch, self.shuffle)

    def _eval_sampler(self, dataset: TokenDataset | None) -> Sampler | None:
        if not self.bucket_by_length or dataset is None:
            return super()._eval_sampler(dataset)
        return LengthOrderSampler(_lengths(dataset))

    def _extract(self) -> None:
        if self.archive.exists():
            actual = md5sum(self.archive)
            if actual != self.md5:
                log.warning(
                    "%s has MD5 %s, not the expected %s: using it as it is (a subset or re-packaged archive)",
                    self.archive,
                    actual,
                    self.md5,
                )
        else:
            try:
                fetch(self.urls, self.archive, self.md5)
            except DownloadError as err:
                raise DataError(
                    f"{self.root} not found, nor {self.archive}, and the download failed: {err}. Put either "
                    f"there, set data.data_dir to the folder that holds them, or set data.url to a mirror"
                ) from None
        log.info("Extracting %s into %s", self.archive, self.data_dir)
        unpacked = unpack(self.archive, self.data_dir / f".{FOLDER}.unpacked")
        try:
            if not (unpacked / FOLDER).is_dir():
                raise DataError(f"{self.archive} has no {FOLDER}/ folder at its top level")
            (unpacked / FOLDER).rename(self.root)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)

    def _tokenised_splits(self, load: bool = True) -> dict | None:
        """Token ids and labels of every split and the tokenizer, from the cache or tokenised now.

        With `load=False` an existing cache is left unread (`prepare_data` only makes sure it exists).
        """
        listing = {split: self._list_reviews(split) for split in ("train", "test")}
        train_labels = torch.tensor([label for _, label, _ in listing["train"]])
        films = self._films(listing["train"]) if self.group_by_film else None
        if self.num_folds:
            keep, held_out = cross_validation_fold(
                train_labels.numpy(), self.num_folds, self.fold, self.split_seed, groups=films
            )
        elif films is not None:
            keep, held_out = mixed_grouped_split(train_labels.tolist(), films, self.val_fraction, self.split_seed)
        else:
            keep, held_out = stratified_split(train_labels.tolist(), self.val_fraction, self.split_seed)
        keep, held_out = torch.as_tensor(keep), torch.as_tensor(held_out)
        # evaluation splits in a seeded random order, so that any first batches mix both classes
        generator = torch.Generator().manual_seed(self.split_seed)
        held_out = held_out[torch.randperm(len(held_out), generator=generator)]
        test_order = torch.randperm(len(listing["test"]), generator=generator)
        paths = {split: [path for path, _, _ in entries] for split, entries in listing.items()}
        self.files = {
            "train": [paths["train"][i] for i in keep],
            "val": [paths["train"][i] for i in held_out],
            "test": [paths["test"][i] for i in test_order],
        }
        test_labels = torch.tensor([label for _, label, _ in listing["test"]])
        labels = {"train": train_labels[keep], "val": train_labels[held_out], "test": test_labels[test_order]}

        self.cache_path = self.cache_dir / f"imdb_{self._cache_key(listing, held_out)}.pt"
        if self.cache_path.exists():
            if not load:
                return None
            try:
                data, intact = unseal(torch.load(self.cache_path, weights_only=True))
                if not intact:
                    raise ValueError("its content does not match its digest" if intact is False else "it has no digest")
                log.info("Tokenised reviews read from %s", self.cache_path)
                return data
            except Exception as err:  # a cache is an optimisation: whatever spoils it, tokenise again
                log.warning("Tokenising again: the cache %s is unreadable (%s)", self.cache_path, err)
        data = self._tokenise(labels)
        save_atomically(data, self.cache_path)
        return data

    def _tokenise(self, labels: dict[str, Tensor]) -> dict:
        self.tokenised = True
        start = time.perf_counter()
        texts = {split: [_read_review(path) for path in self.files[split]] for split in SPLITS}
        read = time.perf_counter()
        tokenizer = self._checkpoint_tokenizer or build_vocabulary(
            texts["train"], self.vocab_size, self.max_len, self.truncation_side
        )
        built = time.perf_counter()
        data: dict = {"tokenizer": tokenizer.to_str()}
        for split in SPLITS:
            data[f"{split}_ids"], data[f"{split}_labels"] = encode(tokenizer, texts[split]), labels[split]
        log.info(
            "Tokenised %s reviews (train, val, test) in %.1f s: reading %.1f s, vocabulary of %d words "
            "%.1f s, encoding %.1f s; cached in %s",
            "/".join(str(len(texts[split])) for split in SPLITS),
            time.perf_counter() - start,
            read - start,
            tokenizer.get_vocab_size(),
            built - read,
            time.perf_counter() - built,
            self.cache_path,
        )
        return data

    def _films(self, reviews: list[tuple[Path, int, tuple[int, int]]]) -> list[str] | None:
        """The film (its IMDb URL) of each training review, from `train/urls_{neg,pos}.txt`; None, with a log
        line, when the archive has neither file."""
        paths = [self.root / "train" / f"urls_{name}.txt" for name in CLASS_FOLDERS]
        present = [path.is_file() for path in paths]
        if not any(present):
            log.warning(
                "No %s: validation is carved from the training reviews one review at a time, so a film's "
                "reviews may be on both sides (set data.group_by_film=false to say this is intended)",
                " or ".join(str(path) for path in paths),
            )
            self.url_files = None
            return None
        if not all(present):
            raise DataError(f"{paths[present.index(False)]} not found, but {paths[present.index(True)]} is")
        lines = [path.read_text(encoding="utf-8", errors="replace").splitlines() for path in paths]
        films = []
        for path, label, _ in reviews:
            match = _REVIEW_ID.match(path.name)
            if match is None:
                raise DataError(f"{path}: its film is unknown, as the name is not <id>_<rating>.txt")
            line = int(match.group(1))
            if line >= len(lines[label]) or not lines[label][line].strip():
                raise DataError(f"{paths[label]} has no film URL on line {line} for {path}")
            films.append(lines[label][line].strip())
        self.url_files = [(str(path.relative_to(self.root)), _stat(path)) for path in paths]
        log.info(
            "Validation grouped by film: %d films in %d training reviews, each on one side of the split",
            len(set(films)),
            len(films),
        )
        return films

    def _word_vectors(self, load: bool = True) -> Tensor | None:
        """Pretrained word vectors from their cache, or pretrained now and cached.

        With `load=False` an existing cache is left unread (`prepare_data` only makes sure it exists).
        """
        settings = self.word_vector_settings
        if not self.files:
            self._tokenised_splits(load=False)
        unlabelled = self._list_unlabelled() if self.use_unlabelled else []
        key = {
            "tokens": self.cache_path.name,
            "settings": dataclasses.asdict(settings),
            "unlabelled": [(str(path.relative_to(self.root)), stat) for path, stat in unlabelled],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.cache_dir / f"imdb_word_vectors_{digest}.pt"
        if path.exists():
            if not load:
                return None
            try:
                stored, intact = unseal(torch.load(path, weights_only=True))
                if not intact:
                    raise ValueError("its content does not match its digest" if intact is False else "it has no digest")
                vectors = stored["vectors"]
                if not isinstance(vectors, Tensor) or vectors.shape[1:] != (settings.dim,):
                    raise ValueError(f"it holds no vectors of {settings.dim} dimensions")
                log.info("Pretrained word vectors read from %s", path)
                return vectors
            except Exception as err:  # a cache is an optimisation: whatever spoils it, pretrain again
                log.warning("Pretraining again: the cache %s is unreadable (%s)", path, err)
        tokenizer = self.tokenizer or Tokenizer.from_str(self._tokenised_splits()["tokenizer"])
        texts = [_read_review(review) for review in self.files["train"]]
        texts += [_read_review(review) for review, _ in unlabelled]
        self.pretrained = True
        vectors = pretrain_word_vectors(texts, tokenizer, settings)
        save_atomically({"vectors": vectors}, path)
        return vectors

    def _list_unlabelled(self) -> list[tuple[Path, tuple[int, int]]]:
        folder = self.root / "train" / UNLABELLED
        if not folder.is_dir():
            raise DataError(
                f"{folder} not found: data.use_unlabelled=true reads the archive's unlabelled reviews there "
                f"(the full aclImdb_v1.tar.gz has them); set data.use_unlabelled=false to pretrain without them"
            )
        with os.scandir(folder) as entries:
            found = sorted((Path(e.path), _stat(e)) for e in entries if e.name.endswith(".txt") and e.is_file())
        if not found:
            raise DataError(f"{folder} holds no .txt reviews")
        return found

    def _list_reviews(self, split: str) -> list[tuple[Path, int, tuple[int, int]]]:
        """(path, label, (size, mtime)) of every review of `split`, in a fixed order."""
        reviews = []
        for label, name in enumerate(CLASS_FOLDERS):
            folder = self.root / split / name
            if not folder.is_dir():
                raise DataError(
                    f"{folder} not found: {self.root} must hold the aclImdb layout "
                    f"(train/neg, train/pos, test/neg, test/pos); run prepare_data() or set data.data_dir"
                )
            with os.scandir(folder) as entries:
                found = [(Path(e.path), label, _stat(e)) for e in entries if e.name.endswith(".txt") and e.is_file()]
            if not found:
                raise DataError(f"{folder} holds no .txt reviews")
            reviews += sorted(found)
        return reviews

    def _cache_key(self, listing: dict[str, list], held_out: Tensor) -> str:
        """A digest of everything the tokenised tensors depend on: settings, vocabulary, review files and the
        validation split itself (its reviews in their order), so a split drawn differently is never read back
        with the tensors of another."""
        files = [
            (split, str(path.relative_to(self.root)), stat) for split in listing for path, _, stat in listing[split]
        ]
        settings = {
            "pipeline": word_tokenizer().to_str(),
            "tokenizer": self._checkpoint_tokenizer.to_str() if self._checkpoint_tokenizer else None,
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "truncation_side": self.truncation_side,
            "val_fraction": self.val_fraction,
            "folds": [self.num_folds, self.fold] if self.num_folds else None,
            "split_seed": self.split_seed,
            "films": self.url_files,
            "held_out": hashlib.sha256(held_out.numpy().tobytes()).hexdigest(),
            "files": files,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def _save_tokenizer_with_run(self) -> None:
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero:
            run_dir = Path(trainer.default_root_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(str(run_dir / "tokenizer.json"))


def _stat(entry: os.DirEntry | Path) -> tuple[int, int]:
    """(size, modification time): what a cache key takes to notice a changed file."""
    stat = entry.stat()
    return stat.st_size, stat.st_mtime_ns


def _lengths(dataset: TokenDataset) -> Tensor:
    """Words per review (the ids are padded after the last word)."""
    return (dataset.ids != PAD_ID).sum(dim=1)


def _read_review(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a readable UTF-8 review ({err})") from None
