"""Whole runs through `medlit.training.run.train`, composed from the real configs, on generated MedMNIST files."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tokenizers import Tokenizer
from torch import nn

from medlit.deploy.rebuild import load_run
from medlit.training.run import build_classifier, instantiate_all, train
from tests.conftest import CONF, compose_config, offline
from tests.helpers import GradientKinds, LayerRecorder
from tests.test_models import IMAGE_MODELS, TEXT_MODELS

# record the dtype and memory order of what every convolution and linear layer computes (tests.helpers.LayerRecorder)
RECORD_LAYERS = ["+callbacks.layers._target_=tests.helpers.LayerRecorder"]

METRICS = {"acc", "precision", "recall", "specificity", "f1", "auroc", "loss"}


@pytest.mark.parametrize(
    ("data", "model"),
    [
        ("pneumoniamnist", "custom_cnn"),
        ("pneumoniamnist", "baseline_cnn"),
        ("pneumoniamnist", "dense_mlp"),
        ("organcmnist", "custom_cnn"),
    ],
)
def test_fast_dev_run(train_config, data, model, tmp_path):
    cfg = train_config(f"data={data}", f"model={model}", "debug=fdr")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text_fast_dev_run(train_config, model, tmp_path):
    train(train_config("data=imdb", f"model={model}", "debug=fdr", "data.max_len=32"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)


@pytest.mark.parametrize("model", IMAGE_MODELS)
def test_chest_xray_fast_dev_run(train_config, model, tmp_path):
    """Every image network as a three-class task (normal, bacterial, viral: `data.labels=pathogen`) on the generated
    Kaggle-layout folder (one truncated JPEG, one RGBA PNG), at 32 px. The two-class task runs in
    `test_xray_best_decays_the_rate_on_a_cosine_each_epoch_and_keeps_the_lowest_validation_loss` and the X-ray runs
    the explanation and deployment tests train."""
    train(train_config("data=chest_xray", "data.labels=pathogen", f"model={model}", "debug=fdr", "data.batch_size=4"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {f"test/{m}" for m in METRICS} <= set(metrics)
    assert {f"test/recall/{name}" for name in ("NORMAL", "BACTERIAL", "VIRAL")} <= set(metrics)


def test_a_text_run_keeps_its_vocabulary_and_a_checkpoint_is_tested_with_it(train_config, tmp_path):
    common = ["data=imdb", "model=fasttext", "model.buckets=4096", "data.vocab_size=20", "data.max_len=32",
              "data.batch_size=16"]  # fmt: skip
    train(train_config(*common, "trainer.max_epochs=4", "optimizer.lr=0.05"))
    run = tmp_path / "run"
    first = json.loads((run / "metrics.json").read_text())
    assert first["test/acc"] > 0.8, "the generated sentiment words are easy to learn"
    best = next((run / "checkpoints").glob("epoch_*.ckpt"))
    saved = torch.load(best, weights_only=True)["IMDBDataModule"]["tokenizer"]
    assert Tokenizer.from_file(str(run / "tokenizer.json")).to_str() == saved

    # another validation split gives another vocabulary of the same size; the checkpoint brings its own
    dm = instantiate(train_config(*common, "data.split_seed=7").data)
    dm.setup()
    assert dm.tokenizer.to_str() != saved
    (run / "metrics.json").unlink()
    train(train_config(*common, "data.split_seed=7", "train=false", f"ckpt_path={best}"))
    again = json.loads((run / "metrics.json").read_text())
    assert again["test/acc"] == pytest.approx(first["test/acc"])
    assert again["test/auroc"] == pytest.approx(first["test/auroc"])
    assert Tokenizer.from_file(str(run / "tokenizer.json")).to_str() == saved


def test_run_selects_on_validation_tests_once_and_logs_to_tensorboard(train_config, tmp_path):
    cfg = train_config("trainer.max_epochs=4", "optimizer.lr=3e-3", "scheduler=reduce_on_plateau")
    best_val = train(cfg)
    run = tmp_path / "run"

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/auroc"] == pytest.approx(best_val)
    assert metrics["test/auroc"] > 0.8, "the generated classes are easy to tell apart"
    best = [p for p in (run / "checkpoints").glob("epoch_*.ckpt")]
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").exists()
    checkpoint = torch.load(best[0], weights_only=True)
    assert checkpoint["hyper_parameters"]["run_config"]["model"]["_target_"] == "medlit.models.CustomCNN"
    for png in ("confusion_matrix_test.png", "roc_test.png"):
        assert (run / "figures" / png).read_bytes()[:4] == b"\x89PNG"

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for stage in ("train", "val", "test"):
        assert {f"{stage}/auroc", f"{stage}/acc"} <= scalars, stage
    assert {"train/loss_epoch", "val/loss", "test/loss", "lr-Adam", "hp/test_auroc"} <= scalars
    assert len(events.Scalars("val/auroc")) == 4
    assert {"test/confusion_matrix", "test/roc", "val/confusion_matrix"} <= set(events.Tags()["images"])
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    assert b"optimizer/lr" in hparams["_hparams_/session_start_info"]


def test_testing_a_saved_checkpoint_without_training(train_config, one_epoch_run, tmp_path):
    first = json.loads((one_epoch_run / "metrics.json").read_text())
    ckpt = next((one_epoch_run / "checkpoints").glob("epoch_*.ckpt"))
    train(train_config("train=false", f"ckpt_path={ckpt}"))
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert again["test/auroc"] == pytest.approx(first["test/auroc"])
    assert again["test/acc"] == pytest.approx(first["test/acc"])
    assert not (tmp_path / "run" / "checkpoints").exists(), "nothing trained"


def test_resume_from_checkpoint_continues_the_epoch_count(train_config, one_epoch_run, tmp_path):
    last = one_epoch_run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # 96 images, batches of 32
    train(train_config("trainer.max_epochs=2", f"ckpt_path={last}"))
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_precision_reaches_the_layers_and_the_loss_stays_float32(train_config, tmp_path, precision, dtype):
    """bf16-mixed on the CPU: every convolution and linear layer computes in bfloat16 in training and validation;
    the loss and the metrics are float32."""
    train(train_config("debug=fdr", f"trainer.precision={precision}", *RECORD_LAYERS))
    seen = LayerRecorder.last
    for stage in ("train", "eval"):
        dtypes = {name: layer.dtype for name, layer in seen.layers(stage).items()}
        assert len(dtypes) == 7 and set(dtypes.values()) == {dtype}, (stage, dtypes)  # 4 convolutions, 3 linear
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/loss"] > 0 and 0 <= metrics["test/auroc"] <= 1


def _losses(model, batches) -> float:
    """The mean loss of `model` over every example of `batches`, of its logits divided by its temperature."""
    model.eval()
    with torch.no_grad():
        logits, target = zip(*((model(x) / model.temperature, y) for x, y in batches), strict=True)
    return float(model.loss(torch.cat(logits), torch.cat(target)))


def test_the_weight_average_is_validated_kept_and_tested(train_config, tmp_path):
    """With an exponential moving average (decay 0.5, far from the trained weights), the logged validation loss,
    the selected checkpoint's weights and the (calibrated) test report are all the averaged weights', not the
    trained ones'."""
    overrides = ["model=dense_mlp", "callbacks=[default,ema]", "callbacks.ema.decay=0.5", "trainer.max_epochs=2"]
    train(train_config(*overrides, "logger=csv"))
    run = tmp_path / "run"
    best = next((run / "checkpoints").glob("epoch_*.ckpt"))
    checkpoint = torch.load(best, weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == trained.keys()
    weights = [k for k, v in averaged.items() if k.startswith("net.") and v.is_floating_point()]
    assert weights and any(not torch.equal(averaged[k], trained[k]) for k in weights)

    rebuilt = load_run(best)
    val, test = (rebuilt.datamodule.evaluation_dataloader(split) for split in ("val", "test"))
    # training logged validation losses before the temperature was fitted (T = 1); the test report is calibrated
    rebuilt.model.load_state_dict({**averaged, "temperature": torch.ones_like(averaged["temperature"])})
    with_average = {"val": _losses(rebuilt.model, val)}
    rebuilt.model.load_state_dict(averaged)
    with_average["test"] = _losses(rebuilt.model, test)
    stored = {key: averaged[key] for key in ("decision_threshold", "temperature")}
    rebuilt.model.load_state_dict({**trained, **stored, "temperature": torch.ones_like(averaged["temperature"])})
    with_trained = {"val": _losses(rebuilt.model, val)}
    rebuilt.model.load_state_dict({**trained, **stored})
    with_trained["test"] = _losses(rebuilt.model, test)
    assert abs(with_average["val"] - with_trained["val"]) > 1e-3, "the two weight sets must be told apart"

    with open(run / "csv" / "metrics.csv") as handle:
        logged = [row for row in csv.DictReader(handle) if row["val/loss"]]
    (at_best,) = [row for row in logged if int(row["epoch"]) == checkpoint["epoch"]]
    assert float(at_best["val/loss"]) == pytest.approx(with_average["val"], abs=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/loss"] == pytest.approx(with_average["test"], abs=1e-5)
    assert metrics["test/loss"] != pytest.approx(with_trained["test"], abs=1e-4)


def test_organcmnist_trains_an_eleven_class_head(train_config, tmp_path):
    train(train_config("data=organcmnist", "trainer.max_epochs=1"))
    checkpoint = torch.load(next((tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    head = [v for k, v in checkpoint["state_dict"].items() if k.startswith("net.head.") and k.endswith("weight")]
    assert head[-1].shape == (11, 256)
    assert checkpoint["hyper_parameters"]["num_classes"] == 11
    assert len(checkpoint["hyper_parameters"]["class_names"]) == 11


def built(cfg) -> tuple[dict, nn.Module, object, torch.optim.Optimizer]:
    """What a composed run builds, observed on the objects: data module, network, optimiser, schedule, trainer,
    checkpoint selection and callbacks; and the network, data module and optimiser themselves."""
    dm = instantiate(cfg.data)
    model = build_classifier(cfg, dm.num_classes, dm.class_names, run_config={})
    net, configured = model.net, model.configure_optimizers()
    layers = net.head if hasattr(net, "backbone") else net
    transform = getattr(dm, "train_transform", None)
    optimizer, schedule = configured["optimizer"], configured.get("lr_scheduler", {}).get("scheduler")
    trainer = instantiate(cfg.trainer, callbacks=instantiate_all(cfg.callbacks), logger=False)
    callbacks = {type(c).__name__: c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)}
    (best,) = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
    finetune, ema, stop = (callbacks.get(n) for n in ("TwoStageFinetuning", "EMAWeightAveraging", "EarlyStopping"))
    found = {
        "data": (
            type(dm).__name__,
            dm.batch_size,
            *(getattr(dm, k) for k in ("image_size", "vocab_size", "max_len") if hasattr(dm, k)),
        ),
        "augmentation": [type(t).__name__ for t in transform.transforms] if transform else None,
        "batch_augmentation": type(dm.batch_transform).__name__ if getattr(dm, "batch_transform", None) else None,
        "net": net.backbone.pretrained_cfg["architecture"] if hasattr(net, "backbone") else type(net).__name__,
        "convolutions": [m.out_channels for m in layers.modules() if isinstance(m, nn.Conv2d)],
        "dense": [m.out_features for m in layers.modules() if isinstance(m, nn.Linear)],
        "dropout": sorted({m.p for m in layers.modules() if isinstance(m, nn.Dropout | nn.Dropout2d) and m.p}),
        "optimizer": (
            type(optimizer).__name__,
            optimizer.param_groups[0]["lr"],
            optimizer.param_groups[0]["weight_decay"],
        ),
        "schedule": _schedule(schedule),
        "epochs": trainer.max_epochs,
        "selects": (best.monitor, best.mode),
        "early_stopping": stop.patience if stop else None,
        "finetune": (finetune.freeze_epochs, finetune.unfreeze_from, finetune.backbone_lr_factor) if finetune else None,
        "ema": round(float(ema._kwargs["avg_fn"](torch.tensor(1.0), torch.tensor(0.0), 5)), 6) if ema else None,
        "clip": trainer.gradient_clip_val,
        "validations_per_epoch": round(1 / trainer.val_check_interval),
    }
    return found, net, dm, optimizer


def _schedule(scheduler) -> tuple | None:
    if scheduler is None:
        return None
    name = type(scheduler).__name__
    settings = {
        "CosineAnnealingLR": ("T_max", "eta_min"),
        "ExponentialLR": ("gamma",),
        "ReduceLROnPlateau": ("mode", "factor", "patience"),
    }[name]
    return (name, *(getattr(scheduler, key) for key in settings))


# What each experiment's header comment promises, as the objects it builds must show it. Keys left out match the
# defaults below (no augmentation of batches, no fine-tuning, no weight average, no clipping, one validation an
# epoch, early stopping after 8 epochs without a better validation AUROC).
DEFAULTS = {
    "batch_augmentation": None, "finetune": None, "ema": None, "clip": None, "validations_per_epoch": 1,
    "early_stopping": 8, "selects": ("val/auroc", "max"), "schedule": None,
}  # fmt: skip
EXPERIMENTS = {
    # fastText, 2M hashed bigram buckets of 16 dimensions beside 100,000 words, the last 1,000 tokens, each
    # counted once and weighted by its naive Bayes ratio, dropout 0.5; sparse gradients with Adagrad 0.1; the best
    # validation accuracy
    "imdb_best": {
        "data": ("IMDBDataModule", 64, 100_000, 1000), "net": "FastText", "dense": [1], "dropout": [0.5],
        "embedding": (100_000 + 2**21, 16, True), "optimizer": ("Adagrad", 0.1, 0.0), "epochs": 5,
        "selects": ("val/acc", "max"), "early_stopping": 8, "augmentation": None, "fasttext": (True, True),
    },
    # BiLSTM: the last 500 tokens, 30,000 words, max pooling, clipping, length buckets, AdamW with cosine decay,
    # an average of the weights over about the last 500 steps, batch 32, 5 epochs, the best validation accuracy;
    # the embedding starts from word2vec vectors of its size pretrained on the training and unlabelled reviews
    "imdb_bilstm": {
        "data": ("IMDBDataModule", 32, 30_000, 500), "net": "BiLSTM", "pooling": "max", "buckets": True,
        "word_vectors": (True, "cbow", 64),
        "dense": [1], "dropout": [0.5], "optimizer": ("AdamW", 1e-3, 1e-2), "schedule": ("CosineAnnealingLR", 5, 1e-6),
        "ema": 0.998, "clip": 1.0, "epochs": 5, "selects": ("val/acc", "max"), "augmentation": None,
    },
    # the feed-forward network: 10,000 words, 200 tokens, Adam, batch 32, 5 epochs, validated every quarter epoch
    "imdb_ffn": {
        "data": ("IMDBDataModule", 32, 10_000, 200), "net": "TextFFN", "dense": [64, 32, 1], "dropout": [0.5],
        "optimizer": ("Adam", 1e-3, 0.0), "epochs": 5, "validations_per_epoch": 4, "selects": ("val/acc", "max"),
        "augmentation": None,
    },
    # the coursework baseline: two convolutions, no augmentation
    "organcmnist_baseline_cnn": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "BaselineCNN", "convolutions": [32, 32], "dense": [11],
        "dropout": [], "augmentation": None, "optimizer": ("Adam", 1e-3, 0.0), "epochs": 30,
    },
    # three convolution blocks, higher dropout, a decaying rate, augmentation without flips
    "organcmnist_custom_cnn": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "CustomCNN", "convolutions": [32, 64, 128],
        "dense": [256, 11], "dropout": [0.4, 0.5], "augmentation": ["RandomAffine"],
        "optimizer": ("Adam", 1e-3, 0.0), "schedule": ("ExponentialLR", 0.9), "epochs": 30,
        "selects": ("val/acc", "max"),
    },
    # the dense-only control: no convolutions, no augmentation
    "organcmnist_dense_mlp": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "DenseMLP", "convolutions": [], "dense": [128, 64, 11],
        "dropout": [0.3], "augmentation": None, "optimizer": ("Adam", 1e-3, 0.0), "epochs": 30,
    },
    "pneumoniamnist_baseline_cnn": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "BaselineCNN", "convolutions": [32, 32], "dense": [1],
        "dropout": [], "augmentation": None, "optimizer": ("SGD", 1e-3, 0.0), "momentum": 0.0, "epochs": 30,
    },
    # BatchNorm, dropout and augmentation: rotation 20 degrees, shift 20 %, horizontal flip
    "pneumoniamnist_custom_cnn": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "CustomCNN", "convolutions": [32, 64], "dense": [128, 1],
        "dropout": [0.3, 0.5], "augmentation": ["RandomAffine", "RandomHorizontalFlip"], "batchnorm": True,
        "affine": ([-20, 20], [0.2, 0.2]), "optimizer": ("Adam", 1e-3, 0.0), "epochs": 30,
    },
    "pneumoniamnist_dense_mlp": {
        "data": ("MedMNISTDataModule", 128, 28), "net": "DenseMLP", "convolutions": [], "dense": [128, 64, 1],
        "dropout": [0.3], "augmentation": None, "optimizer": ("Adam", 1e-3, 0.0), "epochs": 30,
    },
    # the custom CNN at 64 px, Adam 2e-3 with cosine decay over 8 epochs, batch 64, the reference augmentation,
    # both classes drawn equally often, the lowest validation loss, no early stop
    "xray_best": {
        "data": ("ChestXrayDataModule", 64, 64), "net": "CustomCNN", "dense": [128, 1],
        "batch_augmentation": "RandomAffineBatch", "augmentation": None, "optimizer": ("Adam", 2e-3, 0.0),
        "schedule": ("CosineAnnealingLR", 8, 1e-6), "epochs": 8, "selects": ("val/loss", "min"), "early_stopping": None,
        "split": (0.1, "weighted"),
    },
    # xray_best's network and schedule for normal, bacterial or viral pneumonia, with a class-balanced sampler
    "xray_pathogen": {
        "data": ("ChestXrayDataModule", 64, 64), "net": "CustomCNN", "dense": [128, 3],
        "batch_augmentation": "RandomAffineBatch", "augmentation": None, "optimizer": ("Adam", 2e-3, 0.0),
        "schedule": ("CosineAnnealingLR", 8, 1e-6), "epochs": 8, "selects": ("val/loss", "min"), "early_stopping": None,
        "split": (0.1, "weighted"), "labels": "pathogen",
    },
    # 150 px, Adam 3e-4, batch 32, 12 epochs, the rate halved when validation stalls
    "xray_custom_cnn": {
        "data": ("ChestXrayDataModule", 32, 150), "net": "CustomCNN", "batch_augmentation": "RandomAffineBatch",
        "optimizer": ("Adam", 3e-4, 0.0), "schedule": ("ReduceLROnPlateau", "max", 0.5, 2), "epochs": 12,
    },
    # MobileNetV2 at 224 px, Adam 1e-4, batch 32; 10 epochs on the frozen backbone, then 15 with blocks.4 on at
    # a tenth of the rate (early stopping would end the run before the second stage)
    "xray_mobilenetv2": {
        "data": ("ChestXrayDataModule", 32, 224), "net": "mobilenetv2_100", "dense": [128, 1],
        "batch_augmentation": "RandomAffineBatch", "optimizer": ("Adam", 1e-4, 0.0), "finetune": (10, "blocks.4", 0.1),
        "epochs": 25, "early_stopping": None,
    },
    # ResNet-50 under 512 -> dropout -> 128 -> dropout, Adam 1e-4 with weight decay, 25 epochs, 5 frozen then
    # fine-tuned at a tenth; plateau decay; the lowest validation loss; 20 % held out; the weighted sampler
    "xray_resnet50": {
        "data": ("ChestXrayDataModule", 32, 224), "net": "resnet50", "dense": [512, 128, 1], "dropout": [0.5],
        "batch_augmentation": "RandomAffineBatch", "optimizer": ("Adam", 1e-4, 1e-4), "finetune": (5, 0, 0.1),
        "schedule": ("ReduceLROnPlateau", "min", 0.5, 2), "epochs": 25, "selects": ("val/loss", "min"),
        "split": (0.2, "weighted"),
    },
    # the VGG16 base frozen throughout under 512 -> dropout 0.5, Adam 1e-4, up to 30 epochs, early stopping after
    # 10, the rate halved after 5 epochs without improvement
    "xray_vgg16": {
        "data": ("ChestXrayDataModule", 32, 224), "net": "vgg16", "dense": [512, 1], "dropout": [0.5],
        "batch_augmentation": "RandomAffineBatch", "optimizer": ("Adam", 1e-4, 0.0), "finetune": (30, 0, 0.1),
        "schedule": ("ReduceLROnPlateau", "max", 0.5, 5), "epochs": 30, "early_stopping": 10,
    },
}  # fmt: skip


def test_every_experiment_is_checked():
    assert sorted(EXPERIMENTS) == sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def experiment_config(name: str, data_root, xray_dir, tmp_path, *overrides: str):
    """`experiment=<name>` composed as a user would run it, on the generated data (no size overridden)."""
    data = [f"data.data_dir={xray_dir}", f"data.cache_dir={tmp_path / 'cache'}"] if name.startswith("xray") else []
    return offline(
        compose_config([f"paths.data_dir={data_root}", *data, f"experiment={name}", *overrides], tmp_path / "run")
    )


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_builds_what_it_documents(name, data_root, xray_dir, tmp_path):
    """Composed without debug settings (which would override what the experiment is for), each experiment's data,
    network, optimiser, schedule, selection and callbacks are those its file describes."""
    cfg = experiment_config(name, data_root, xray_dir, tmp_path)
    expected = {**DEFAULTS, **EXPERIMENTS[name]}
    found, net, dm, optimizer = built(cfg)
    assert {key: found[key] for key in expected if key in found} == {k: v for k, v in expected.items() if k in found}
    if "embedding" in expected:
        embedding = net.embedding
        assert (embedding.num_embeddings, embedding.embedding_dim, embedding.sparse) == expected["embedding"]
    if "pooling" in expected:
        assert net.pooling == expected["pooling"] and dm.bucket_by_length is expected["buckets"]
    if "momentum" in expected:
        group = optimizer.param_groups[0]
        assert group["momentum"] == expected["momentum"] and not group["nesterov"]
    if "affine" in expected:
        affine = dm.train_transform.transforms[0]
        assert ([float(d) for d in affine.degrees], list(affine.translate)) == expected["affine"]
    if "batchnorm" in expected:
        assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    if "split" in expected:
        assert (dm.val_fraction, dm.sampler) == expected["split"]
    if "labels" in expected:
        assert dm.labels == expected["labels"] and dm.class_names == ["NORMAL", "BACTERIAL", "VIRAL"]
    if "fasttext" in expected:
        assert (net.binary, net.naive_bayes) == expected["fasttext"]
    if "word_vectors" in expected:
        settings = dm.word_vector_settings
        assert (dm.use_unlabelled, settings.algorithm, settings.dim) == expected["word_vectors"]


def checkpoints(run) -> list[dict]:
    return [torch.load(path, weights_only=True) for path in sorted((run / "checkpoints").glob("epoch_*.ckpt"))]


def changed(before: dict, after: dict, prefix: str, ndim: int = 4) -> set[str]:
    """The `ndim`-dimensional weights under `prefix` (4: convolutions) that differ between two states."""
    names = [k for k, v in after.items() if k.startswith(prefix) and v.ndim == ndim and v.is_floating_point()]
    return {k for k in names if not torch.equal(before[k], after[k])}


def test_xray_mobilenetv2_trains_the_head_then_fine_tunes_from_blocks_4(finetuned_mobilenetv2_run):
    """Epoch 0: the head alone learns; epoch 1: the convolutions from blocks.4 on join at a tenth of the rate,
    those before it stay as they were."""
    run, initial = finetuned_mobilenetv2_run
    first, second = checkpoints(run)
    convolutions = {k for k, v in initial.items() if k.startswith("net.backbone.") and v.ndim == 4}
    stages = ("blocks.4.", "blocks.5.", "blocks.6.", "conv_head.")
    upper = {k for k in convolutions if k.startswith(tuple(f"net.backbone.{stage}" for stage in stages))}
    assert upper and convolutions - upper

    assert changed(initial, first["state_dict"], "net.backbone.") == set()
    assert changed(initial, first["state_dict"], "net.head.", ndim=2) == {"net.head.0.weight", "net.head.3.weight"}
    assert changed(first["state_dict"], second["state_dict"], "net.backbone.") == upper
    assert [g["lr"] for g in first["optimizer_states"][0]["param_groups"]] == [pytest.approx(1e-4)]
    rates = [g["lr"] for g in second["optimizer_states"][0]["param_groups"]]
    assert rates == [pytest.approx(1e-4), pytest.approx(1e-5)]


def test_vgg16_experiment_never_unfreezes_its_base(data_root, xray_dir, tmp_path):
    """`freeze_epochs: ${trainer.max_epochs}`: at no epoch of the run does the callback unfreeze a layer."""
    cfg = experiment_config("xray_vgg16", data_root, xray_dir, tmp_path, "trainer.max_epochs=3")
    callback = instantiate(cfg.callbacks.finetune)
    model = build_classifier(cfg, 2, ["NORMAL", "PNEUMONIA"], run_config={})
    callback.freeze_before_training(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    for epoch in range(3):
        callback.finetune_function(model, epoch, optimizer)
    assert len(optimizer.param_groups) == 1
    assert not any(p.requires_grad for p in model.net.backbone.parameters())
    assert all(p.requires_grad for p in model.net.head.parameters())


def test_imdb_ffn_validates_every_quarter_epoch_and_keeps_the_best_of_them(train_config, tmp_path):
    """64 training reviews in batches of 8: validation after every 2nd batch, 4 times an epoch; the checkpoint kept
    is the best of those 4 by validation accuracy."""
    sizes = ["data.vocab_size=60", "data.max_len=32", "data.batch_size=8", "trainer.max_epochs=1", "logger=csv"]
    train(train_config("experiment=imdb_ffn", *sizes))
    run = tmp_path / "run"
    with open(run / "csv" / "metrics.csv") as handle:
        validations = [row for row in csv.DictReader(handle) if row["val/acc"]]
    assert [int(row["step"]) for row in validations] == [1, 3, 5, 7]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/acc"] == pytest.approx(max(float(row["val/acc"]) for row in validations))


def test_xray_best_decays_the_rate_on_a_cosine_each_epoch_and_keeps_the_lowest_validation_loss(train_config, tmp_path):
    """Three epochs of one batch: Adam's 2e-3 follows the cosine over max_epochs (T_max = 3, floor 1e-6), one step an
    epoch; the checkpoint kept is the epoch with the lowest validation loss."""
    shorter = [
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=1",
        "data.batch_size=8",
        "logger=csv",
        "test=false",
    ]
    train(train_config("experiment=xray_best", *shorter))
    run = tmp_path / "run"
    with open(run / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    rates = [float(row["lr-Adam"]) for row in rows if row.get("lr-Adam")]
    assert rates == pytest.approx([2e-3, 1e-6 + (2e-3 - 1e-6) * 0.75, 1e-6 + (2e-3 - 1e-6) * 0.25])  # (1 + cos)/2
    losses = {int(row["epoch"]): float(row["val/loss"]) for row in rows if row["val/loss"]}
    assert sorted(losses) == [0, 1, 2]
    (kept,) = (run / "checkpoints").glob("epoch_*.ckpt")
    assert kept.name == f"epoch_{min(losses, key=losses.get):03d}.ckpt"


def test_imdb_best_trains_fasttext_with_sparse_gradients_and_adagrad(train_config, tmp_path):
    """The embedding's gradients are sparse (only the rows a batch uses), Adagrad applies them, and the network
    learns the generated sentiment words."""
    sizes = ["data.vocab_size=60", "data.max_len=32", "model.buckets=4096", "trainer.max_epochs=3"]
    train(train_config("experiment=imdb_best", *sizes, "+callbacks.grads._target_=tests.helpers.GradientKinds"))
    assert GradientKinds.last.sparse == {"net.embedding.weight": True, "net.out.weight": False, "net.out.bias": False}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test/acc"] > 0.8
