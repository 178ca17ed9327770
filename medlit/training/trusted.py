"""What a run configuration stored in a checkpoint may ask for, checked before anything is built from it.

`medlit eval`, `explain`, `predict`, `export`, `serve` and `resume=` rebuild a run from the configuration its
checkpoint carries, with `hydra.utils.instantiate`. A checkpoint may come from anywhere, so its configuration
is untrusted input: it may name only the classes medlit's own configs use (`ALLOWED_TARGETS`, and those listed
in the environment variable `MEDLIT_TRUSTED_TARGETS`), use no instantiation option but `_partial_` on the
optimiser and scheduler, hold no interpolation (`${...}`: medlit stores configurations resolved, and a
resolver could read the environment or create folders), set sizes only within `LIMITS`, and describe a network
whose weights have exactly the shapes of the checkpoint's weights (checked on PyTorch's meta device, where
nothing is allocated). Anything else is refused with one line naming the key. Keys named on the command line
are the user's own choice and are not checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from medlit.data.decode import MAX_PIXELS
from medlit.errors import MedlitError, UntrustedInput

log = logging.getLogger(__name__)

TRUSTED_TARGETS_ENV = "MEDLIT_TRUSTED_TARGETS"

# every `_target_` of the configs under conf/ (a test keeps this list and the configs in step), and no other
ALLOWED_TARGETS = frozenset(
    {
        "medlit.data.medmnist.MedMNISTDataModule",
        "medlit.data.chest_xray.ChestXrayDataModule",
        "medlit.data.imdb.IMDBDataModule",
        "medlit.data.augment.RandomAffineBatch",
        "medlit.models.BaselineCNN",
        "medlit.models.CustomCNN",
        "medlit.models.DenseMLP",
        "medlit.models.TimmNet",
        "medlit.models.BiLSTM",
        "medlit.models.FastText",
        "medlit.models.TextFFN",
        "medlit.models.TextTransformer",
        "medlit.training.classifier.Classifier",
        "medlit.training.callbacks.TwoStageFinetuning",
        "medlit.training.callbacks.Throughput",
        "medlit.training.checkpoint.AtomicCheckpointIO",
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        "torch.optim.Adagrad",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.ExponentialLR",
        "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "torchvision.transforms.v2.Compose",
        "torchvision.transforms.v2.RandomAffine",
        "torchvision.transforms.v2.RandomHorizontalFlip",
        "pytorch_lightning.Trainer",
        "pytorch_lightning.callbacks.EarlyStopping",
        "pytorch_lightning.callbacks.EMAWeightAveraging",
        "pytorch_lightning.callbacks.LearningRateMonitor",
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "pytorch_lightning.callbacks.RichModelSummary",
        "pytorch_lightning.callbacks.RichProgressBar",
        "pytorch_lightning.loggers.CSVLogger",
        "pytorch_lightning.loggers.MLFlowLogger",
        "pytorch_lightning.loggers.TensorBoardLogger",
        "pytorch_lightning.loggers.WandbLogger",
    }
)
# Hydra's instantiation options; medlit's configs use `_partial_` on these groups alone
INSTANTIATE_KEYS = ("_target_", "_partial_", "_args_", "_convert_", "_recursive_")
PARTIAL_GROUPS = ("optimizer", "scheduler")
# (lowest, highest) of the sizes a stored configuration may set, checked before anything is allocated
LIMITS: dict[str, tuple[int, int]] = {
    "data.image_size": (1, 4096),
    "data.size": (1, 4096),
    "data.in_channels": (1, 4),
    "data.num_classes": (2, 10_000),
    "data.vocab_size": (3, 2_000_000),
    "data.max_len": (1, 8192),
    "data.batch_size": (1, 4096),
    "data.eval_batch_size": (1, 4096),
    "data.num_workers": (0, 64),
    "data.decode_workers": (1, 256),
    "data.num_folds": (2, 100),
    "data.max_pixels": (1, MAX_PIXELS),
}
# a batch of images (batch size x channels x image size^2 bytes) may take at most this much
MAX_BATCH_BYTES = 1 << 30
# stored model settings that would have timm read weights or download: the checkpoint holds every weight
_WEIGHT_SOURCES = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
# where a data module downloads from: a rebuilt run uses the official source, whatever its checkpoint says
DOWNLOAD_KEYS = ("url", "mirrors", "md5")


def allowed_targets() -> frozenset[str]:
    """`ALLOWED_TARGETS` and the classes named (comma-separated) in `MEDLIT_TRUSTED_TARGETS`."""
    extra = {name.strip() for name in os.environ.get(TRUSTED_TARGETS_ENV, "").split(",") if name.strip()}
    return ALLOWED_TARGETS | extra


def check_run_config(config: Any, source: str, named: Iterable[str] = ()) -> None:
    """Refuse (`UntrustedInput`, one line naming the key) a stored run configuration that names a class
    outside `allowed_targets()`, uses an instantiation option other than `_partial_` on the optimiser and
    scheduler, holds an interpolation, sets a size outside `LIMITS`, names a path as `data.archive`, or has
    timm fetch weights. Keys `named` (those given on the command line, which replace the stored ones) and
    their sub-keys are skipped."""
    if not isinstance(config, dict):
        raise UntrustedInput(f"refusing {source}: its stored configuration is a {type(config).__name__}, not a mapping")
    skip = tuple(named)
    allowed = allowed_targets()
    for key, value in _leaves(config, "", skip):
        _check_value(key, value, allowed, source)
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    for key, (low, high) in LIMITS.items():
        name = key.split(".")[1]
        if name in data and not _skipped(key, skip):
            _check_size(key, data[name], low, high, source, optional=True)
    _check_batch_bytes(data, source, skip)
    _check_sources(config, source, skip)


def without_download_sources(config: dict, named: Iterable[str] = ()) -> dict:
    """`config` with its data group's download sources (`DOWNLOAD_KEYS`) removed, except those named on the
    command line: a data module rebuilt from a checkpoint fetches from the official source, MD5-checked."""
    data = config.get("data")
    if not isinstance(data, dict):
        return config
    dropped = [key for key in DOWNLOAD_KEYS if data.get(key) and not _skipped(f"data.{key}", tuple(named))]
    if dropped:
        log.info(
            "Not using the stored data.%s: a rebuilt run downloads from the official source", ", data.".join(dropped)
        )
    return {**config, "data": {key: value for key, value in data.items() if key not in dropped}}


def check_hyper_parameters(hparams: dict, source: str) -> None:
    """The Classifier's stored `num_classes` (within `data.num_classes`' limits) and `class_names` (as many)."""
    low, high = LIMITS["data.num_classes"]
    _check_size("hyper_parameters.num_classes", hparams.get("num_classes"), low, high, source)
    names = hparams.get("class_names")
    if names is not None and (not isinstance(names, (list, tuple)) or len(names) != hparams["num_classes"]):
        raise UntrustedInput(
            f"refusing {source}: hyper_parameters.class_names does not list num_classes={hparams['num_classes']} names"
        )


def check_model_fits_weights(model_cfg: DictConfig, state_dict: dict, source: str, prefix: str = "net.") -> None:
    """Build the network `model_cfg` describes on the meta device (no memory is allocated) and refuse it unless
    every weight it has is in `state_dict` (under `prefix`) with the same shape: a configuration asking for a
    larger network than the checkpoint holds never reaches real memory."""
    cfg = model_cfg.copy()
    with open_dict(cfg):
        for key, off in (("pretrained", False), ("checkpoint_path", None)):
            if key in cfg:
                cfg[key] = off
    try:
        with torch.device("meta"):
            net = instantiate(cfg)
    except MedlitError:
        raise
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UntrustedInput(
            f"refusing {source}: the network its model configuration describes cannot be checked before it is "
            f"built ({type(err).__name__}: {reason})"
        ) from None
    for name, tensor in net.state_dict().items():
        stored = state_dict.get(prefix + name)
        if stored is None:
            raise UntrustedInput(
                f"{source} does not fit the network its model configuration describes: it has no weights "
                f"{prefix}{name} {tuple(tensor.shape)}"
            )
        if tuple(stored.shape) != tuple(tensor.shape):
            raise UntrustedInput(
                f"{source} does not fit the network its model configuration describes: {prefix}{name} is "
                f"{tuple(tensor.shape)} there and {tuple(stored.shape)} in the checkpoint"
            )


def _check_sources(config: dict, source: str, skip: tuple[str, ...]) -> None:
    """No stored file path for an archive, and no weight source for timm: the checkpoint holds every weight."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    archive = data.get("archive")
    if archive is not None and not _skipped("data.archive", skip) and not _file_name(archive):
        raise UntrustedInput(f"refusing {source}: its stored data.archive={archive!r} is not a file name")
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    for name in _WEIGHT_SOURCES:
        if name in model and not _skipped(f"model.{name}", skip):
            raise UntrustedInput(f"refusing {source}: its stored configuration sets model.{name}, a weight source")


def _file_name(value: Any) -> bool:
    return isinstance(value, str) and PurePath(value).name == value and value not in ("", ".", "..")


def _leaves(node: Any, key: str, skip: tuple[str, ...]):
    """(dotted key, value) of every mapping entry and list item under `node`, special keys included."""
    if _skipped(key, skip):
        return
    if isinstance(node, dict):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if name in INSTANTIATE_KEYS:
                if not _skipped(child, skip):
                    yield child, value
            else:
                yield from _leaves(value, child, skip)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{key}[{index}]", skip)
    else:
        yield key, node


def _check_value(key: str, value: Any, allowed: frozenset[str], source: str) -> None:
    name = key.rpartition(".")[2]
    if name == "_target_":
        if not isinstance(value, str) or value not in allowed:
            raise UntrustedInput(
                f"refusing {source}: its stored configuration sets {key}={value!r}, which is not among the classes "
                "medlit builds from a checkpoint (see docs/security.md to allow your own)"
            )
    elif name == "_partial_":
        if key.partition(".")[0] not in PARTIAL_GROUPS or key.count(".") != 1:
            raise UntrustedInput(f"refusing {source}: its stored configuration sets {key}, which medlit never stores")
    elif name in INSTANTIATE_KEYS:
        raise UntrustedInput(f"refusing {source}: its stored configuration sets {key}, which medlit never stores")
    elif isinstance(value, str) and "${" in value:
        raise UntrustedInput(
            f"refusing {source}: its stored configuration key {key} holds an interpolation ({value[:80]!r}); "
            "medlit stores configurations resolved"
        )


def _check_size(key: str, value: Any, low: int, high: int, source: str, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UntrustedInput(
            f"refusing {source}: its stored configuration sets {key}={value!r}, outside {low}-{high}; name "
            f"{key.removeprefix('hyper_parameters.')} on the command line to choose a value yourself"
        )


def _check_batch_bytes(data: dict, source: str, skip: tuple[str, ...]) -> None:
    keys = ("data.batch_size", "data.in_channels", "data.image_size")
    values = [data.get(key.split(".")[1]) for key in keys]
    if any(_skipped(key, skip) for key in keys) or not all(isinstance(v, int) for v in values):
        return
    batch, channels, size = values
    if batch * channels * size * size > MAX_BATCH_BYTES:
        raise UntrustedInput(
            f"refusing {source}: its stored data.batch_size={batch} of {channels} x {size} x {size} images would "
            f"take more than {MAX_BATCH_BYTES >> 20} MB a batch; name data.batch_size on the command line"
        )


def _skipped(key: str, skip: tuple[str, ...]) -> bool:
    return any(key == named or key.startswith(named + ".") or key.startswith(named + "[") for named in skip)
