"""Where a training step's time goes, layer by layer: forward and backward milliseconds of each layer of an
image network built from the run's config, with the FLOP/s its convolutions and dense layers reach against
a large matrix product in the same precision.

    python benchmarks/layers.py                                  # experiment=xray_custom_cnn
    python benchmarks/layers.py experiment=xray_mobilenetv2 model.pretrained=false --steps 10

Trains on one fixed random batch (no data loading), with the run's batch size, image size, memory format,
precision, optimiser, loss and gradient clipping (the hand-written loop's training step). A layer's forward
time runs from its call to its return; its backward time from the gradient reaching its output to the
gradient reaching its input. That is exact for chains of layers; where a network branches (residual
blocks), a layer's backward also holds what other branches compute before its input's gradient is
complete. Time outside every layer (loss, optimiser, the first layer's weight gradients when the images
need none) is the last row. torch.profiler is not used: its own allocations make the memory allocator
fault fresh pages in during the profiled steps, which on some machines slowed them by half.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.hand_loop import compose, training_step  # noqa: E402  (after the path is set)
from benchmarks.throughput import load, matmul_flops_per_s, table  # noqa: E402


def timed_layers(net):
    """The modules that are timed: leaves, and modules with parameters of their own (such as a BatchNorm
    that also holds its activation), whose children are then timed with them."""
    chosen = []
    for name, module in net.named_modules():
        if any(name.startswith(parent + ".") for parent, _ in chosen if parent):
            continue
        own = next(module.parameters(recurse=False), None) is not None
        if (not list(module.children()) or own) and name:
            chosen.append((name, module))
    return chosen


def layer_flops(module, inputs, output) -> float:
    """Forward FLOPs of a convolution or dense layer (multiply-adds x 2), else 0."""
    from torch import nn

    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * int(module.weight[0, 0].numel())
        return 2.0 * output.numel() * per_output
    if isinstance(module, nn.Linear):
        return 2.0 * output.numel() * module.in_features
    return 0.0


def profile_layers(net, train_step, x, y, steps: int, warmup: int) -> dict:
    """Run `train_step(x, y)` (one optimisation step of `net`) `warmup` then `steps` times; the mean forward
    and backward ms of each timed layer, its forward FLOPs, its output shape, and the mean step ms."""
    import torch

    fwd, bwd, flops, shapes = defaultdict(float), defaultdict(float), {}, {}
    started, reached = {}, {}

    def backward_done(name: str) -> None:
        if name in reached:  # else a layer that returns its input (Identity): nothing of its own to time
            bwd[name] += time.perf_counter() - reached.pop(name)

    def pre_hook(name):
        def hook(module, inputs):
            started[name] = time.perf_counter()
            first = inputs[0] if inputs else None
            if isinstance(first, torch.Tensor) and first.requires_grad:
                first.register_hook(lambda grad: backward_done(name))

        return hook

    def post_hook(name):
        def hook(module, inputs, output):
            fwd[name] += time.perf_counter() - started[name]
            flops[name], out = layer_flops(module, inputs, output), output
            if isinstance(out, tuple):  # an LSTM's (output, state)
                out = out[0]
            shapes[name] = tuple(out.shape)
            if out.requires_grad:
                out.register_hook(lambda grad: reached.__setitem__(name, time.perf_counter()))

        return hook

    layers = timed_layers(net)
    handles = [
        h
        for name, m in layers
        for h in (m.register_forward_pre_hook(pre_hook(name)), m.register_forward_hook(post_hook(name)))
    ]

    def step() -> None:
        reached.clear()
        train_step(x, y)

    try:
        for _ in range(warmup):
            step()
        fwd.clear(), bwd.clear()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    finally:
        for handle in handles:
            handle.remove()
    rows = [
        {
            "layer": f"{name} ({type(m).__name__})",
            "kind": type(m).__name__,
            "shape": shapes.get(name, ()),
            "forward_ms": 1000 * fwd[name] / steps,
            "backward_ms": 1000 * bwd[name] / steps,
            "gflop": flops.get(name, 0.0) / 1e9,
        }
        for name, m in layers
    ]
    return {"layers": rows, "step_ms": 1000 * statistics.mean(times), "examples": len(x)}


def build(overrides: list[str], work: Path, batch: int | None):
    """The network, its training step (as the hand-written loop's, medlit's) and a random batch of the run
    `overrides` composes, and its precision."""
    import torch
    from hydra.utils import instantiate

    from medlit.training.hardware import keep_freed_memory

    cfg = compose(overrides, work)
    if cfg.get("keep_freed_memory", False):
        keep_freed_memory()
    torch.manual_seed(0)
    fmt = torch.channels_last if cfg.classifier.channels_last else torch.contiguous_format
    net = instantiate(cfg.model).train().to(memory_format=fmt)
    n, size, classes = batch or cfg.data.batch_size, cfg.data.image_size, cfg.data.num_classes
    x = torch.randn(n, cfg.data.in_channels, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (n,))
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    return net, training_step(cfg, net, optimizer, None), x, y, str(cfg.trainer.precision)


def report(result: dict, matmul: float) -> str:
    rows, in_layers = [], 0.0
    for r in result["layers"]:
        f, b = r["forward_ms"], r["backward_ms"]
        in_layers += f + b
        rate = [r["gflop"] / f * 1e3 if r["gflop"] and f else "", 2 * r["gflop"] / b * 1e3 if r["gflop"] and b else ""]
        rows.append([r["layer"], "x".join(map(str, r["shape"][1:])), f, b, *rate, f"{(f + b) / result['step_ms']:.1%}"])
    rest = result["step_ms"] - in_layers
    rows.append(["outside the layers (loss, optimiser, ...)", "", rest, "", "", "", f"{rest / result['step_ms']:.1%}"])
    header = ["layer", "output", "forward ms", "backward ms", "fwd GFLOP/s", "bwd GFLOP/s", "of the step"]
    step, examples = result["step_ms"], result["examples"]
    return (
        f"{table(header, rows)}\n\n{by_kind(result)}\n\n"
        f"step {step:.1f} ms ({examples / step * 1e3:.1f} examples/s, batch {examples}); "
        f"a 2048 x 2048 matrix product: {matmul / 1e9:.0f} GFLOP/s; backward GFLOP/s count 2 x the forward's"
    )


def by_kind(result: dict) -> str:
    """The layers' time summed by kind of layer, largest first, with the FLOP/s of the kinds that compute."""
    kinds = defaultdict(lambda: [0, 0.0, 0.0])
    for r in result["layers"]:
        kind = kinds[r["kind"]]
        kind[0] += 1
        kind[1] += r["forward_ms"] + r["backward_ms"]
        kind[2] += r["gflop"] * (3 if r["backward_ms"] else 1)
    rows = [
        [name, n, ms, gflop / ms * 1e3 if gflop else "", f"{ms / result['step_ms']:.1%}"]
        for name, (n, ms, gflop) in sorted(kinds.items(), key=lambda item: -item[1][1])
    ]
    return table(["kind", "layers", "forward + backward ms", "GFLOP/s", "of the step"], rows)


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["experiment=xray_custom_cnn"], help="train.py overrides")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first")
    parser.add_argument("--batch", type=int, help="batch size (default: the run's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medlit-layers-") as work:
        net, train_step, x, y, precision = build(args.overrides, Path(work), args.batch)
        result = profile_layers(net, train_step, x, y, args.steps, args.warmup)
    print(f"## Layer by layer: {' '.join(args.overrides)} ({precision}, {args.steps} steps)\n")
    dtype = "bfloat16" if precision.startswith("bf16") else "float32"
    print(report(result, matmul_flops_per_s(dtype)), f"\n{load()}")


if __name__ == "__main__":
    main()
