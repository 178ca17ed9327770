"""Training throughput of medlit, against a hand-written PyTorch loop, the Keras reference pipeline and
the machine's FLOP bound, with the effect of each speed lever.

    python benchmarks/throughput.py                          # generated JPEGs, both models, all levers
    python benchmarks/throughput.py --data /data/chest_xray --per-class 300 --keras
    python benchmarks/throughput.py --cold /data/fullres_sample --keras      # first epoch, empty cache

Every medlit run is `python train.py` in its own process with the `throughput` callback, which times each
step's data wait and compute; the hand-written loop runs in its own process on the same data tensors with
the network built from the same config, the same batch size, precision, memory format and augmentation.
Contenders are interleaved and repeated; tables show medians over the repeats. Numbers are only
comparable within one invocation: other work on the machine changes them from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the same augmentation as torchvision transforms v2, image by image in the DataLoader workers
PER_IMAGE = (
    "{_target_:torchvision.transforms.v2.Compose,transforms:["
    "{_target_:torchvision.transforms.v2.RandomAffine,degrees:20,translate:[0.1,0.1],scale:[0.8,1.2],shear:10},"
    "{_target_:torchvision.transforms.v2.RandomHorizontalFlip},"
    "{_target_:torchvision.transforms.v2.ColorJitter,contrast:0.2}]}"
)
MODELS = {
    "custom_cnn": ["experiment=xray_custom_cnn"],
    "mobilenetv2": ["data=chest_xray", "model=mobilenetv2", "model.pretrained=false", "data.image_size=224"],
}
# each lever against the default, on custom_cnn (override lists; empty: the default)
LEVERS = {
    "default": [],
    "fp32 (trainer.precision=32-true)": ["trainer.precision=32-true"],
    "bf16 autocast (trainer.precision=bf16-mixed)": ["trainer.precision=bf16-mixed"],
    "channels_last=true": ["classifier.channels_last=true"],
    "channels_last=false": ["classifier.channels_last=false"],
    "torch.compile (classifier.compile=true)": ["classifier.compile=true"],
    "per-image torchvision augmentation in workers": ["data.batch_transform=null", f"data.train_transform={PER_IMAGE}"],
    "no augmentation": ["data.batch_transform=null"],
    "no decoded-image cache (data.cache_dir=null)": ["data.cache_dir=null"],
    "num_workers=0": ["data.num_workers=0"],
}
KERAS_VENV = ROOT / "benchmarks" / ".venv-keras"
KERAS_PACKAGES = ["tensorflow-cpu==2.21.*", "tf_keras==2.21.*", "pillow", "scipy"]


# ---------------------------------------------------------------------------------------------- data
def generated_folder(root: Path, per_class: int, size: int = 224) -> Path:
    """A Kaggle-layout folder of `per_class` JPEGs per class (train/ only: splits are carved from it)."""
    from tests.synthetic import write_xray_folder

    patients = max(1, per_class // 2)  # one to three images per patient
    return write_xray_folder(root / "chest_xray", {"train": (patients, patients)}, (size, size), bad_files=False)


def subset_folder(source: Path, root: Path, per_class: int) -> Path:
    """`root/train/<class>/` with links to the first `per_class` files of each class of `source/train`."""
    for class_dir in sorted(p for p in (source / "train").iterdir() if p.is_dir()):
        target = root / "train" / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(class_dir.iterdir())[:per_class]:
            (target / file.name).symlink_to(file.resolve())
    return root


# ------------------------------------------------------------------------------------------- runners
def medlit_overrides(model: str, data: Path, cache: Path, extra: list[str]) -> list[str]:
    return [
        *MODELS[model],
        f"data.data_dir={data}",
        f"data.cache_dir={cache}",
        "data.test_strategy=split",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "++trainer.enable_progress_bar=false",
        "callbacks.early_stopping=null",
        "logger=csv",
        "test=false",
        "++trainer.num_sanity_val_steps=0",
        *extra,
    ]


def run_medlit(overrides: list[str], out: Path, in_process: bool = False) -> dict:
    """`train.py` with `overrides` and the throughput callback writing to `out`; its report."""
    overrides = [
        *overrides,
        f"paths.log_dir={out.parent / 'logs'}",
        "+callbacks.throughput._target_=medlit.throughput.Throughput",
        f"+callbacks.throughput.path={out}",
    ]
    if in_process:
        from medlit.training import train

        train(compose(overrides, out.parent / out.stem))
    else:
        _run([sys.executable, str(ROOT / "train.py"), *overrides], out)
    return json.loads(out.read_text())


def run_hand_loop(overrides: list[str], out: Path, steps: int, epochs: int, in_process: bool = False) -> dict:
    if in_process:
        hand_loop(overrides, out, steps, epochs)
    else:
        args = ["--hand-loop", json.dumps(overrides), "--out", str(out), "--steps", str(steps)]
        _run([sys.executable, __file__, *args, "--epochs", str(epochs)], out)
    return json.loads(out.read_text())


def _run(command: list[str], out: Path) -> None:
    result = subprocess.run(command, cwd=out.parent, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")


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


def hand_loop(overrides: list[str], out: Path, steps: int, epochs: int) -> None:
    """The same training in plain PyTorch: the network built from the config, the data module's uint8
    training tensors, the same batch size, augmentation, normalisation, memory format, precision and
    optimiser; no Lightning, metrics, logging or checkpoints."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, Dataset

    from medlit.throughput import peak_rss_mb, rates

    cfg = compose(overrides, out.parent / out.stem)
    torch.manual_seed(0)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    augment, channels = datamodule.batch_transform, datamodule.in_channels
    net = instantiate(cfg.model)
    mean = cfg.data.mean or getattr(net, "input_mean", None) or [0.5]
    std = cfg.data.std or getattr(net, "input_std", None) or [0.5]
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    memory_format = torch.channels_last if cfg.classifier.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format).train()
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    bf16 = str(cfg.trainer.precision).startswith("bf16")

    class Examples(Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            params = augment.sample(torch.Generator().manual_seed(i)) if augment else torch.zeros(0)
            return images[i], labels[i], params

    loader = DataLoader(
        Examples(),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=len(labels) > cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        persistent_workers=cfg.data.num_workers > 0,
    )
    record, epochs_out, startup = [], [], time.perf_counter() - start
    for epoch in range(epochs):
        epoch_start = last_end = time.perf_counter()
        for step, (x, y, params) in enumerate(loader):
            if step == steps:
                break
            if augment:
                x = augment(x, params)
            if channels != x.shape[1]:
                x = x.expand(-1, channels, -1, -1)
            begin = time.perf_counter()
            x = ((x.float() / 255 - mean) / std).contiguous(memory_format=memory_format)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
            loss = F.binary_cross_entropy_with_logits(logits.float().squeeze(1), y.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            now = time.perf_counter()
            record.append({"epoch": epoch, "images": len(y), "wait": begin - last_end, "compute": now - begin})
            last_end = now
        measured = [s for s in record if s["epoch"] == epoch][2 if epoch == 0 else 0 :]
        epochs_out.append({"epoch": epoch, "train_time": last_end - epoch_start, **rates(measured)})
    report = {"startup": startup, "peak_rss_mb": peak_rss_mb(), "epochs": epochs_out, "steps": record}
    out.write_text(json.dumps(report, indent=1))


def run_keras(data: Path, out: Path, image_size: int, batch_size: int, epochs: int) -> dict:
    """The Keras reference pipeline in its own environment (created on first use)."""
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        print(f"Creating {KERAS_VENV} with {' '.join(KERAS_PACKAGES)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KERAS_PACKAGES], check=True)
    script = ROOT / "benchmarks" / "keras_reference.py"
    args = ["--data", str(data), "--image-size", str(image_size), "--batch-size", str(batch_size)]
    _run([str(python), str(script), *args, "--epochs", str(epochs), "--out", str(out)], out)
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------ hardware bound
def flops_per_image(overrides: list[str], output_dir: Path) -> tuple[float, float]:
    """Training FLOPs of one image: 3 x the forward FLOPs (backward costs about twice the forward), and what
    torch.utils.flop_counter counts for forward + backward. The counter's backward of a grouped
    (depthwise) convolution is counted as if the convolution were dense, so the first figure is the bound's."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    cfg = compose(overrides, output_dir)
    net = instantiate(cfg.model).train()
    size, batch = cfg.data.image_size, 4
    x = torch.randn(batch, cfg.data.in_channels, size, size)
    with FlopCounterMode(display=False) as forward:
        out = net(x)
    with FlopCounterMode(display=False) as both:
        net(x).sum().backward()
    del out
    return 3 * forward.get_total_flops() / batch, both.get_total_flops() / batch


def matmul_flops_per_s(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """The best FLOP/s of an n x n matrix product in `dtype_name` (float32 or bfloat16) on this machine."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# ------------------------------------------------------------------------------------------- reports
def later_epochs(report: dict) -> dict:
    """Rates from the second epoch on (the first when there is one): steps of those epochs pooled."""
    from medlit.throughput import rates

    first = report["steps"][0]["epoch"]
    steps = [s for s in report["steps"] if s["epoch"] > first] or report["steps"][2:] or report["steps"]
    return rates(steps)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            f"{v:.3g}" if isinstance(v, float) and abs(v) < 1000 else f"{v:.0f}" if isinstance(v, float) else str(v)
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.hand_loop:
        hand_loop(json.loads(args.hand_loop), Path(args.out), args.steps, args.epochs)
        return
    work = Path(tempfile.mkdtemp(prefix="medlit-bench-"))
    limits = [f"trainer.max_epochs={args.epochs}", f"++trainer.limit_train_batches={args.steps}"]
    limits.append("++trainer.limit_val_batches=2")
    if args.smoke:
        limits += ["data.image_size=32", "data.num_workers=0", "data.batch_size=8"]
    data = prepare_data(args, work)
    print(
        f"# medlit training throughput\n\ndata: {data}; {args.repeats} repeat(s), medians; model and lever runs "
        f"{args.steps} steps x {args.epochs} epochs, Keras runs {args.keras_epochs} whole epochs; {load()}\n",
        flush=True,
    )
    counter = iter(range(10**6))

    def out() -> Path:
        folder = work / f"run{next(counter)}"
        folder.mkdir()
        return folder / "throughput.json"

    if args.models:
        compare_with_hand_loop(args, data, work, limits, out)
    if args.levers:
        compare_levers(args, data, work, limits, out)
    if args.keras:
        compare_with_keras(args, data, work, out)
    if args.cold:
        cold_start(args, Path(args.cold), work, out)
    print(f"\n{load()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a chest X-ray folder with train/<class>/ (default: generated JPEGs)")
    parser.add_argument("--per-class", type=int, default=200, help="images per class (a subset of --data)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch and run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="custom_cnn,mobilenetv2", help="comma-separated; '' for none")
    parser.add_argument("--levers", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keras", action="store_true", help="compare whole epochs with the Keras pipeline")
    parser.add_argument("--keras-epochs", type=int, default=3)
    parser.add_argument("--cold", help="first epoch from an empty cache on this folder, against Keras")
    parser.add_argument("--smoke", action="store_true", help="a few tiny in-process steps (a test)")
    parser.add_argument("--hand-loop", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if args.smoke:
        args.per_class, args.steps, args.epochs, args.repeats, args.levers = 16, 2, 2, 1, False
        args.models = args.models[:1]
    return args


def prepare_data(args: argparse.Namespace, work: Path) -> Path:
    if args.data:
        return subset_folder(Path(args.data), work / "data", args.per_class)
    return generated_folder(work, args.per_class, size=64 if args.smoke else 224)


def compare_with_hand_loop(args, data: Path, work: Path, limits: list[str], out) -> None:
    """medlit against the hand-written loop, per model, and both against the FLOP bound."""
    rows, bound_rows = [], []
    for model in args.models:
        overrides = medlit_overrides(model, data, work / "cache", limits)
        results = {"medlit": [], "hand-written loop": []}
        for _ in range(args.repeats):
            results["medlit"].append(run_medlit(overrides, out(), in_process=args.smoke))
            results["hand-written loop"].append(
                run_hand_loop(overrides, out(), args.steps, args.epochs, in_process=args.smoke)
            )
        summary = {name: summarise(reports) for name, reports in results.items()}
        for name, row in summary.items():
            rows.append([model, name, *row.values()])
        overhead = 1 - summary["medlit"]["images/s"] / summary["hand-written loop"]["images/s"]
        rows.append([model, "**framework overhead**", f"**{overhead:+.1%}** images/s", "", "", "", "", ""])
        cfg = compose(overrides, work / "flops")
        precision = "bfloat16" if str(cfg.trainer.precision).startswith("bf16") else "float32"
        (flops, counted), peak = flops_per_image(overrides, work / "flops"), matmul_flops_per_s(precision)
        for name, row in summary.items():
            achieved = flops * row["images/s"]
            fraction = f"{achieved / peak:.1%}"
            bound_rows.append(
                [model, name, precision, flops / 1e9, counted / 1e9, achieved / 1e9, peak / 1e9, fraction]
            )
    print("## medlit and a hand-written PyTorch loop (same network, data, batch, precision, layout)\n")
    header = ["model", "run", "images/s", "data wait", "step (s)", "epoch train (s)", "startup (s)", "peak RSS (MB)"]
    print(table(header, rows), f"\n\n{load()}\n", flush=True)
    print("## Against the FLOP bound (a 2048x2048 matrix product in the same precision)\n")
    header = [
        "model",
        "run",
        "precision",
        "GFLOP/image (3x fwd)",
        "counter fwd+bwd",
        "GFLOP/s reached",
        "matmul GFLOP/s",
    ]
    header.append("fraction")
    print(table(header, bound_rows), f"\n\n{load()}\n", flush=True)


def summarise(reports: list[dict]) -> dict:
    """Medians over repeats of: later-epoch images/s and data wait, step time, epoch time, startup, RSS."""
    later = [later_epochs(r) for r in reports]
    epochs = [e["train_time"] for r in reports for e in r["epochs"][1:]] or [
        r["epochs"][0]["train_time"] for r in reports
    ]
    return {
        "images/s": median([x["images_per_s"] for x in later]),
        "data wait": f"{median([x['data_wait'] for x in later]):.1%}",
        "step (s)": median([x["step_time"] for x in later]),
        "epoch train (s)": median(epochs),
        "startup (s)": median([r["startup"] for r in reports]),
        "peak RSS (MB)": median([r["peak_rss_mb"] for r in reports]),
    }


def compare_levers(args, data: Path, work: Path, limits: list[str], out) -> None:
    """Each lever against the default (custom_cnn), interleaved and repeated."""
    results, failed = {name: [] for name in LEVERS}, {}
    cfg = compose(medlit_overrides("custom_cnn", data, work / "cache", limits), work / "defaults")
    defaults = {
        f"trainer.precision={cfg.trainer.precision}",
        f"classifier.channels_last={str(cfg.classifier.channels_last).lower()}",
    }
    defaults |= {f"data.num_workers={cfg.data.num_workers}"}
    for _ in range(args.repeats):
        for name, extra in LEVERS.items():
            if extra and extra[0] in defaults:
                continue  # the default already
            overrides = medlit_overrides("custom_cnn", data, work / "cache", [*limits, *extra])
            try:
                results[name].append(run_medlit(overrides, out()))
            except RuntimeError as err:  # a lever that fails here is reported, not fatal
                failed[name] = str(err).strip().splitlines()[-1][:200]
    base = summarise(results["default"])["images/s"]
    rows = []
    for name, reports in results.items():
        if name in failed:
            rows.append([name, "failed", "", "", "", failed[name]])
        if not reports:
            continue
        row = summarise(reports)
        rows.append(
            [
                name,
                row["images/s"],
                f"{row['images/s'] / base:.2f}x",
                row["data wait"],
                row["startup (s)"],
                row["peak RSS (MB)"],
            ]
        )
    print("## Levers (custom_cnn, 150 px, batch 32; medlit through train.py)\n")
    header = ["setting", "images/s", "vs default", "data wait", "startup (s)", "peak RSS (MB)"]
    print(table(header, rows), f"\n\n{load()}\n", flush=True)


def compare_with_keras(args, data: Path, work: Path, out) -> None:
    """Whole epochs over the same JPEG folder: medlit's default xray_custom_cnn against Keras."""
    overrides = medlit_overrides("custom_cnn", data, work / "cache", [f"trainer.max_epochs={args.keras_epochs}"])
    medlit_runs, keras_runs = [], []
    for _ in range(args.repeats):
        medlit_runs.append(run_medlit(overrides, out()))
        keras_runs.append(run_keras(data, out(), 150, 32, args.keras_epochs))
    rows = []
    for epoch in range(args.keras_epochs):
        ours = median([r["epochs"][epoch]["images_per_s"] for r in medlit_runs])
        theirs = median([r["epochs"][epoch]["images_per_s"] for r in keras_runs])
        wait = median([r["epochs"][epoch]["data_wait"] for r in medlit_runs])
        rows.append([epoch + 1, ours, f"{wait:.1%}", theirs, f"{ours / theirs:.2f}x"])
    print("## medlit (experiment=xray_custom_cnn, defaults) and the Keras ImageDataGenerator pipeline\n")
    print(table(["epoch", "medlit images/s", "medlit data wait", "Keras images/s", "ratio"], rows))
    scores = [r.get("best_score") for r in medlit_runs]
    print(f"\nmedlit best val/auroc per repeat: {scores}; {load()}\n", flush=True)


def cold_start(args, folder: Path, work: Path, out) -> None:
    """First epoch from an empty cache (decoding included) against Keras's first epoch on the same files."""
    medlit_rate, keras_rate = [], []
    for repeat in range(args.repeats):
        cache = work / f"cold-cache{repeat}"
        overrides = medlit_overrides("custom_cnn", folder, cache, ["trainer.max_epochs=1"])
        report = run_medlit(overrides, out())
        images = sum(s["images"] for s in report["steps"])
        medlit_rate.append(images / (report["startup"] + report["epochs"][0]["train_time"]))
        keras_rate.append(run_keras(folder, out(), 150, 32, 1)["epochs"][0]["images_per_s"])
    ours, theirs = median(medlit_rate), median(keras_rate)
    print(f"## Cold start: first epoch on {folder}, medlit's time including decoding and caching\n")
    print(table(["medlit images/s", "Keras images/s", "ratio"], [[ours, theirs, f"{ours / theirs:.2f}x"]]))
    print(f"\nper repeat: medlit {medlit_rate}, Keras {keras_rate}; {load()}\n", flush=True)


if __name__ == "__main__":
    main()
