"""The hand-written PyTorch loop that `throughput.py` measures medlit against: the training a medlit run
does, in plain PyTorch, timed step by step as the `Throughput` callback times medlit.

The network is built from the same config and trained on the data module's training tensors, with the
same batch size and batching, precision, optimiser, loss and gradient clipping; images also get the same
augmentation, normalisation and memory format. There is no Lightning, metric, logging or checkpoint.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compose(overrides: list[str], output_dir: Path):
    """The real train.yaml composed with `overrides`, as `python train.py` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import medlit  # noqa: F401  (registers the resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra
    return cfg


def data_module(cfg):
    """The run's data module, prepared (extracted, decoded or tokenised, and cached) and set up to fit."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def hand_loop(overrides: list[str], out: Path, steps: int, epochs: int) -> None:
    """Train `steps` steps in each of `epochs` epochs; write the report `Throughput` would write to `out`."""
    import torch
    from hydra.utils import instantiate

    from medlit.training.callbacks import peak_rss_mb
    from medlit.training.hardware import keep_freed_memory

    cfg = compose(overrides, out.parent / out.stem)
    if cfg.get("keep_freed_memory", False):  # the same memory allocator settings as medlit's
        keep_freed_memory()
    torch.manual_seed(0)
    start = time.perf_counter()
    datamodule = data_module(cfg)
    net = instantiate(cfg.model)
    batches = text_batches if hasattr(datamodule.train_set, "ids") else image_batches
    loader, prepare, preprocess = batches(cfg, datamodule, net)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    train_step = training_step(cfg, net.train(), optimizer, preprocess)
    startup = time.perf_counter() - start
    validate = validation(cfg, datamodule, net, preprocess)
    record, epochs_out = timed_epochs(loader, prepare, train_step, steps, epochs, validate)
    report = {"startup": startup, "peak_rss_mb": peak_rss_mb(), "epochs": epochs_out, "steps": record}
    out.write_text(json.dumps(report, indent=1))


def image_batches(cfg, datamodule, net):
    """Loader of (uint8 images, labels, augmentation parameters); `prepare` augments the batch (data wait,
    as medlit's `on_after_batch_transfer`), `preprocess` normalises it in the step (as the `Classifier`).
    Puts `net` in the configured memory format."""
    import torch
    from torch.utils.data import Dataset

    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    augment, channels = datamodule.batch_transform, datamodule.in_channels
    mean = cfg.data.mean or getattr(net, "input_mean", None) or [0.5]
    std = cfg.data.std or getattr(net, "input_std", None) or [0.5]
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    memory_format = torch.channels_last if cfg.classifier.channels_last else torch.contiguous_format
    net.to(memory_format=memory_format)

    class Examples(Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            params = augment.sample(torch.Generator().manual_seed(i)) if augment else torch.zeros(0)
            return images[i], labels[i], params

    def prepare(batch):
        x, y, params = batch
        if augment:
            x = augment(x, params)
        if channels != x.shape[1]:
            x = x.expand(-1, channels, -1, -1)
        return x, y

    def preprocess(x):
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=memory_format)

    return training_loader(cfg, Examples()), prepare, preprocess


def text_batches(cfg, datamodule, net):
    """Loader of (token ids, labels), with `data.bucket_by_length` batched by similar length by medlit's
    own sampler; the ids go to the network as they are."""
    from medlit.data.sampling import LengthBucketSampler
    from medlit.data.vocabulary import PAD_ID

    dataset, sampler = datamodule.train_set, None
    if cfg.data.get("bucket_by_length"):
        lengths = (dataset.ids != PAD_ID).sum(dim=1)
        # the batches of the medlit run (same seed); the sampler asks for the epoch once per pass: 0, 1, ...
        sampler = LengthBucketSampler(
            lengths, cfg.data.batch_size, seed=cfg.seed or 0, epoch=itertools.count().__next__
        )
    return training_loader(cfg, dataset, sampler), tuple, None


def validation(cfg, datamodule, net, preprocess: Callable | None) -> Callable:
    """A pass over the first `trainer.limit_val_batches` validation batches (all when unset) in eval mode
    without gradients, as medlit validates after each training epoch; what it allocates in between shapes
    the memory the next epoch's steps get."""
    import torch

    limit = cfg.trainer.get("limit_val_batches")
    channels = getattr(datamodule, "in_channels", None)

    def validate() -> None:
        net.eval()
        with torch.inference_mode():
            for i, (x, _) in enumerate(datamodule.val_dataloader()):
                if isinstance(limit, int) and i == limit:
                    break
                if channels and x.shape[1] != channels:
                    x = x.expand(-1, channels, -1, -1)
                net(preprocess(x) if preprocess is not None else x)
        net.train()

    return validate


def training_loader(cfg, dataset, sampler=None):
    """Batches of `data.batch_size` in a random order (or `sampler`'s), a last incomplete one dropped."""
    from torch.utils.data import DataLoader

    batch_size, workers = cfg.data.batch_size, cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def training_step(cfg, net, optimizer, preprocess: Callable | None) -> Callable:
    """One optimisation step on (inputs, labels), as medlit's: autocast to the configured precision,
    BCE-with-logits on a single logit (cross-entropy on several), `trainer.gradient_clip_val` if set."""
    import torch
    import torch.nn.functional as F

    bf16 = str(cfg.trainer.precision).startswith("bf16")
    clip = cfg.trainer.get("gradient_clip_val")
    by_value = cfg.trainer.get("gradient_clip_algorithm") == "value"
    clip_gradients = torch.nn.utils.clip_grad_value_ if by_value else torch.nn.utils.clip_grad_norm_

    def step(x, y) -> None:
        if preprocess is not None:
            x = preprocess(x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        logits = logits.float()
        if logits.shape[1] == 1:
            loss = F.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())
        else:
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            clip_gradients(net.parameters(), clip)
        optimizer.step()

    return step


def timed_epochs(
    loader, prepare: Callable, train_step: Callable, steps: int, epochs: int, validate: Callable
) -> tuple[list, list]:
    """Per-step data wait (loading and `prepare`) and compute (`train_step`), and per-epoch rates without
    the first epoch's two warm-up steps: the records of the `Throughput` callback. `validate` runs after
    each epoch, outside the timed steps, as medlit's validation does."""
    from medlit.training.callbacks import step_rates as rates

    record, summary = [], []
    for epoch in range(epochs):
        epoch_start = last_end = time.perf_counter()
        for step, batch in enumerate(loader):
            if step == steps:
                break
            x, y = prepare(batch)
            begin = time.perf_counter()
            train_step(x, y)
            now = time.perf_counter()
            record.append({"epoch": epoch, "images": len(y), "wait": begin - last_end, "compute": now - begin})
            last_end = now
        measured = [s for s in record if s["epoch"] == epoch][2 if epoch == 0 else 0 :]
        summary.append({"epoch": epoch, "train_time": last_end - epoch_start, **rates(measured)})
        validate()
    return record, summary
