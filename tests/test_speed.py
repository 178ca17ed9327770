"""Speed levers: batch augmentation, precision and worker defaults, channels-last, compile, the throughput
callback and the benchmark's smoke mode."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from medlit.data.augment import RandomAffineBatch
from medlit.data.base import ImageTensorDataset
from medlit.models import CustomCNN
from medlit.training import hardware
from medlit.training.callbacks import Throughput
from medlit.training.classifier import Classifier
from medlit.training.run import build_classifier, train
from tests.conftest import compose_config
from tests.helpers import BatchRecorder, LayerRecorder
from tests.test_chest_xray import loaded


def test_batch_augmentation_matches_torchvision_per_image():
    """Each image of the batch is warped as torchvision's affine + flip would warp it with its parameters."""
    images = torch.randint(0, 256, (6, 1, 40, 48), dtype=torch.uint8)
    augment = RandomAffineBatch(degrees=20, translate=(0.1, 0.1), scale=(0.8, 1.2), shear=10, flip=0.5)
    generator = torch.Generator().manual_seed(0)
    params = torch.stack([augment.sample(generator) for _ in images])
    out = augment(images, params)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for image, p, warped in zip(images, params, out, strict=True):
        shift = [round(float(p[1]) * 48), round(float(p[2]) * 40)]
        expected = TF.affine(image, angle=float(p[0]), translate=shift, scale=float(p[3]), shear=[float(p[4]), 0.0])
        if p[5] > 0.5:
            expected = TF.horizontal_flip(expected)
        assert (warped != expected).float().mean() < 0.01  # nearest-pixel ties may round differently


def test_batch_augmentation_contrast_and_identity():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    identity = torch.tensor([[0, 0, 0, 1, 0, 0, 1]] * 4, dtype=torch.float32)
    assert torch.equal(RandomAffineBatch(contrast=0.2)(images, identity), images)
    flat = identity.clone()
    flat[:, 6] = 0.0  # contrast factor 0: every pixel becomes its image's mean
    out = RandomAffineBatch(contrast=0.2)(images, flat)
    assert (out.flatten(1).max(1).values - out.flatten(1).min(1).values).max() <= 1


def test_batch_augmentation_is_drawn_per_example_and_epoch():
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    dataset = ImageTensorDataset(images, torch.zeros(4), batch_transform=RandomAffineBatch(degrees=30))
    first = dataset[(0, 1)][2]
    assert torch.equal(first, dataset[(0, 1)][2])  # the same example in the same epoch: the same draw
    assert not torch.equal(first, dataset[(1, 1)][2])
    assert not torch.equal(first, dataset[(0, 2)][2])


def test_chest_xray_training_batches_are_augmented_on_the_device(tmp_path):
    from tests.synthetic import write_xray_folder

    data = write_xray_folder(tmp_path / "chest_xray")
    dm = loaded(data, tmp_path, batch_transform=RandomAffineBatch(degrees=30, flip=1.0))
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 3
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.dtype == torch.uint8 and images.shape == batch[0].shape and len(labels) == len(batch[1])
    assert not torch.equal(images, batch[0])
    assert len(next(iter(dm.val_dataloader()))) == 2  # evaluation batches are never augmented


@pytest.mark.parametrize(
    ("accelerator", "fast_bf16", "cuda", "expected"),
    [
        ("cpu", True, False, "bf16-mixed"),
        ("cpu", False, False, "32-true"),
        ("auto", True, False, "bf16-mixed"),
        ("auto", False, False, "32-true"),
        ("auto", False, True, "16-mixed"),
        ("gpu", False, True, "16-mixed"),
        ("mps", True, False, "32-true"),
    ],
)
def test_precision_follows_the_hardware(accelerator, fast_bf16, cuda, expected):
    assert hardware.fastest_precision(accelerator, fast_bf16_cpu=fast_bf16, cuda=cuda) == expected


def test_bf16_is_fast_only_with_amx(tmp_path):
    assert hardware.cpu_has_fast_bf16(frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    # AVX-512 BF16 without AMX: bf16 products are slower than fp32 ones
    assert not hardware.cpu_has_fast_bf16(frozenset({"avx512f", "avx512_bf16", "avx512_vnni"}))
    assert not hardware.cpu_has_fast_bf16(frozenset({"avx2", "avx512f", "avx512_vnni"}))
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nflags\t\t: other\n")
    assert hardware.cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert hardware.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (4, 3), (64, 4)])
def test_workers_leave_a_core_to_training(cpus, workers):
    assert hardware.default_workers(cpus) == workers


FAULTS_PER_STEP = """
import ctypes, resource, statistics, sys, torch
from medlit.training.hardware import keep_freed_memory
# no transparent huge pages for this process, whatever the machine's setting: with them (THP "always"), a 256 MB
# block is faulted in 2 MB at a time and the count below would say nothing about 4 kB pages
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(64, 1024, 1024)  # 256 MB: malloc maps it from the OS unless told to keep freed memory
faults = []
# Until the heap settles, a freed block whose aligned tail a small allocation took is too small for the next
# product and a new one is faulted in: seen in as many as six of the nine steps after the first, by where the heap
# happens to lie
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    (x * 2).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, int(statistics.median(faults[10:])))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_kept_freed_memory_is_not_faulted_in_again_at_every_step():
    """In fresh processes: this one has kept freed memory since its first training."""

    def faults(mode: str) -> tuple[str, int]:
        run = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True, text=True, check=True)
        kept, count = run.stdout.split()
        return kept, int(count)

    pages = 256 * 2**20 // resource.getpagesize()
    kept, faulted = faults("keep")
    assert kept == "True"
    assert faulted < pages / 100
    assert faults("return")[1] > pages / 2  # every page of the product faulted in again


def test_composed_defaults_follow_the_machine(tmp_path):
    cfg = compose_config(["data=chest_xray", "trainer=cpu"], tmp_path)
    assert cfg.trainer.precision == hardware.fastest_precision("cpu")
    assert cfg.data.num_workers == hardware.default_workers()


def test_channels_last_gives_the_same_outputs():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    plain = Classifier(CustomCNN(1, 2), num_classes=2).eval()
    nhwc = Classifier(CustomCNN(1, 2), num_classes=2, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    conv = nhwc.net.features[1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain(x), nhwc(x), atol=1e-5)


@pytest.mark.parametrize(
    ("levers", "dtype", "channels_last"),
    [
        (["classifier.channels_last=true", "trainer.precision=bf16-mixed"], torch.bfloat16, True),
        (["classifier.channels_last=false", "trainer.precision=32-true"], torch.float32, False),
    ],
)
def test_channels_last_and_precision_reach_every_convolution(train_config, levers, dtype, channels_last, tmp_path):
    """What each convolution of the chest X-ray CNN receives in training and in validation: channels-last inputs
    (those with more than one channel, where the two orders differ) and outputs in the precision asked for."""
    train(
        train_config(
            "experiment=xray_custom_cnn", "debug=fdr", *levers, "+callbacks.layers._target_=tests.helpers.LayerRecorder"
        )
    )
    for stage in ("train", "eval"):
        convolutions = {n: layer for n, layer in LayerRecorder.last.layers(stage).items() if layer.channels}
        assert len(convolutions) == 4, stage  # the four blocks' convolutions
        assert {layer.dtype for layer in convolutions.values()} == {dtype}
        deep = [layer.channels_last for layer in convolutions.values() if layer.channels > 1]
        assert len(deep) == 3 and set(deep) == {channels_last}, stage
    assert 0 <= json.loads((tmp_path / "run" / "metrics.json").read_text())["test/auroc"] <= 1


def _among(image: torch.Tensor, stored: torch.Tensor) -> bool:
    return bool((stored == image).flatten(1).all(dim=1).any())


@pytest.mark.parametrize("batch_transform", ["default", "null"])
def test_batch_transform_null_feeds_the_stored_images_unchanged(train_config, batch_transform, tmp_path, monkeypatch):
    """With the chest X-rays' batch augmentation, training batches are warped copies of the stored images; with
    `data.batch_transform=null` the augmentation never runs and every training image is a stored one, as it is."""
    calls = []
    augment = RandomAffineBatch.__call__
    monkeypatch.setattr(RandomAffineBatch, "__call__", lambda self, *a: calls.append(1) or augment(self, *a))
    lever = ["data.batch_transform=null", "data.num_workers=1"] if batch_transform == "null" else []
    record = "+callbacks.batches._target_=tests.helpers.BatchRecorder"
    train(train_config("experiment=xray_custom_cnn", "debug=fdr", "data.batch_size=8", *lever, record))
    seen = BatchRecorder.last
    (batch,) = seen.batches  # fast_dev_run: one training batch
    unchanged = [_among(image, seen.stored) for image in batch]
    if batch_transform == "null":
        assert calls == [] and all(unchanged) and seen.workers == 1
    else:
        assert len(calls) == 1 and not any(unchanged) and seen.workers == 0


def test_compile_is_asked_of_the_network_through_the_config(tmp_path, monkeypatch):
    """`classifier.compile=true` compiles the network (in place) once, and nothing else; false leaves it alone."""
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *args, **kwargs: compiled.append(self))
    on = build_classifier(compose_config(["classifier.compile=true"], tmp_path), 2, ["a", "b"], run_config={})
    assert len(compiled) == 1 and compiled[0] is on.net
    build_classifier(compose_config(["classifier.compile=false"], tmp_path), 2, ["a", "b"], run_config={})
    assert len(compiled) == 1


@pytest.mark.slow
def test_a_compiled_network_trains_and_predicts_as_the_plain_one_and_keeps_its_keys():
    """A real torch.compile of a 2-layer network (inductor's C++ backend, built with gcc in worker processes):
    the same outputs and gradients as without compiling, and a state dict with the same keys."""
    import torch._dynamo

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(576, 1)
        )

    plain, compiled = Classifier(net(), num_classes=2), Classifier(net(), num_classes=2, compile=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    x = torch.randint(0, 256, (4, 1, 14, 14), dtype=torch.uint8)
    target = torch.tensor([0, 1, 1, 0])
    for model in (plain, compiled):
        model.loss(model(x), target).backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert torch.allclose(compiled(x), plain(x), atol=1e-5)
    for (name, p), (_, q) in zip(plain.named_parameters(), compiled.named_parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_throughput_callback_reports_steps_and_epochs(train_config, tmp_path):
    out = tmp_path / "throughput.json"
    cfg = train_config(
        "data=chest_xray",
        "callbacks=[default,throughput]",
        f"callbacks.throughput.path={out}",
        "callbacks.throughput.warmup=1",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "data.batch_size=8",
        "test=false",
    )
    train(cfg)
    report = json.loads(out.read_text())
    assert [e["epoch"] for e in report["epochs"]] == [0, 1]
    steps = report["steps"]
    assert steps and all(s["wait"] >= 0 and s["compute"] > 0 and s["images"] == 8 for s in steps)
    later = report["epochs"][1]
    assert later["images_per_s"] > 0 and 0 <= later["data_wait"] < 1
    assert report["peak_rss_mb"] > 0 and report["startup"] > 0 and report["best_score"] is not None


def test_throughput_counts_the_examples_of_image_and_text_batches():
    callback, trainer = Throughput(), SimpleNamespace(current_epoch=0)
    images = (torch.zeros(5, 1, 8, 8, dtype=torch.uint8), torch.zeros(5), torch.zeros(5, 7))
    reviews = [torch.ones(3, 12, dtype=torch.long), torch.zeros(3)]  # (token ids, labels), as collated
    for batch in (images, reviews):
        callback.on_train_batch_start(trainer, None, batch, 0)
        callback.on_train_batch_end(trainer, None, None, batch, 0)
    assert [step["images"] for step in callback.steps] == [5, 3]


def test_benchmark_smoke_mode(tmp_path, capsys, monkeypatch):
    """The benchmark's tables come out of a few tiny steps of an image model and the text model (no Keras,
    no network)."""
    import benchmarks.throughput as bench

    monkeypatch.setattr(bench.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    bench.main(["--smoke"])
    printed = capsys.readouterr().out
    assert "framework overhead" in printed and "hand-written loop" in printed and "fraction" in printed
    assert "| custom_cnn | medlit |" in printed and "images/s" in printed
    assert "| bilstm | hand-written loop |" in printed and "reviews/s" in printed and "GFLOP/review" in printed


def test_layer_profile_times_each_layer_within_the_step():
    """Each layer's forward and backward time is a part of the step's; convolutions' FLOPs are counted."""
    from torch import nn

    from benchmarks.layers import profile_layers

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 1))
    x, y = torch.randn(8, 1, 16, 16), torch.rand(8, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def train_step(x, y):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        optimizer.step()

    result = profile_layers(net, train_step, x, y, steps=3, warmup=1)
    layers = {r["layer"]: r for r in result["layers"]}
    assert list(layers) == ["0 (Conv2d)", "1 (BatchNorm2d)", "2 (ReLU)", "3 (Flatten)", "4 (Linear)"]
    assert layers["0 (Conv2d)"]["gflop"] == pytest.approx(2 * 8 * 4 * 14 * 14 * 9 / 1e9)
    assert layers["4 (Linear)"]["gflop"] == pytest.approx(2 * 8 * 4 * 14 * 14 / 1e9)
    assert layers["0 (Conv2d)"]["backward_ms"] == 0  # the images need no gradient
    assert all(r["forward_ms"] > 0 for r in result["layers"])
    assert all(r["backward_ms"] > 0 for r in result["layers"][1:])
    spent = sum(r["forward_ms"] + r["backward_ms"] for r in result["layers"])
    assert spent < result["step_ms"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # hooks removed


def test_layer_profile_of_a_configured_run(capsys):
    """`benchmarks/layers.py` builds the run's network from its overrides and prints both tables."""
    from benchmarks.layers import main

    main(["experiment=pneumoniamnist_custom_cnn", "data.batch_size=4", "--steps", "1", "--warmup", "1"])
    printed = capsys.readouterr().out
    assert "| features.1.0 (Conv2d) | 64x14x14 |" in printed
    assert "| Conv2d | 2 |" in printed and "outside the layers" in printed and "examples/s, batch 4" in printed
