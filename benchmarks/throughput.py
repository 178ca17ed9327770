"""Training throughput of medlit, against a hand-written PyTorch loop, the Keras reference pipeline and
the machine's FLOP bound, with the effect of each speed lever.

    python benchmarks/throughput.py                # generated JPEGs and reviews, all three models, all levers
    python benchmarks/throughput.py --data /data/chest_xray --per-class 300 --keras
    python benchmarks/throughput.py --cold /data/fullres_sample --keras      # first epoch, empty cache
    python benchmarks/throughput.py --models bilstm --no-levers --imdb /data/aclImdb_v1.tar.gz   # real IMDb

The image models train on chest X-rays (images/s), `bilstm` on IMDb reviews (`experiment=imdb_bilstm`,
reviews/s). Every medlit run is `python train.py` in its own process with the `throughput` callback, which
times each step's data wait and compute; the hand-written loop runs in its own process on the same data
tensors with the network built from the same config, the same batch size and batching, precision,
optimiser and gradient clipping (for images also the same memory format and augmentation).
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
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.hand_loop import compose, data_module, hand_loop  # noqa: E402  (after the path is set)

# the same augmentation as torchvision transforms v2, image by image in the DataLoader workers
PER_IMAGE = (
    "{_target_:torchvision.transforms.v2.Compose,transforms:["
    "{_target_:torchvision.transforms.v2.RandomAffine,degrees:20,translate:[0.1,0.1],scale:[0.8,1.2],shear:10},"
    "{_target_:torchvision.transforms.v2.RandomHorizontalFlip},"
    "{_target_:torchvision.transforms.v2.ColorJitter,contrast:0.2}]}"
)
# name: (what it trains on, its overrides); imdb_bilstm without its weight average, which the hand-written
# loop does not keep, and without pretrained word vectors (the steps cost the same from any starting point)
MODELS = {
    "custom_cnn": ("images", ["experiment=xray_custom_cnn"]),
    "mobilenetv2": (
        "images",
        ["data=chest_xray", "model=mobilenetv2", "model.pretrained=false", "data.image_size=224"],
    ),
    "bilstm": (
        "reviews",
        ["experiment=imdb_bilstm", "~callbacks.ema", "data.word_vectors=null", "data.use_unlabelled=false"],
    ),
}
# --smoke: tiny inputs and batches
SMOKE = {
    "images": ["data.image_size=32", "data.num_workers=0", "data.batch_size=8"],
    "reviews": ["data.max_len=4", "data.vocab_size=1000", "data.batch_size=8"],
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
    "freed memory back to the OS (keep_freed_memory=false)": ["keep_freed_memory=false"],
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


def generated_reviews(root: Path, per_class: int) -> Path:
    """An aclImdb folder's parent: `per_class` training reviews per class (a tenth as many for test), as
    long as IMDb's (`imdb_review_words`), so that the LSTMs cost what they cost on the real reviews."""
    from tests.synthetic import imdb_review_words, write_aclimdb

    counts = {"train": per_class, "test": max(1, per_class // 10)}
    return write_aclimdb(root / "imdb", counts, words=imdb_review_words)


def image_data(folder: Path, cache: Path) -> list[str]:
    """Overrides that train on a chest X-ray folder, decoded into `cache`, its test split carved out."""
    return [f"data.data_dir={folder}", f"data.cache_dir={cache}", "data.test_strategy=split"]


def text_data(source: Path, work: Path) -> list[str]:
    """Overrides that train on IMDb from an aclImdb folder's parent or an archive (extracted into `work`),
    tokenised into `work`, never next to the source."""
    cache = f"data.cache_dir={work / 'text-cache'}"
    if source.is_file():
        return [f"data.data_dir={work / 'imdb'}", f"data.archive={source.resolve()}", cache]
    if not (source / "aclImdb").is_dir():
        raise SystemExit(f"--imdb {source}: neither an archive nor a folder holding aclImdb/")
    return [f"data.data_dir={source.resolve()}", cache]


# ------------------------------------------------------------------------------------------- runners
def medlit_overrides(model: str, data: list[str], extra: list[str]) -> list[str]:
    """`model`'s overrides on `data` (see `image_data`, `text_data`), quiet and without testing."""
    return [
        *MODELS[model][1],
        *data,
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "++trainer.enable_progress_bar=false",
        "callbacks.early_stopping=null",
        "logger=csv",
        "test=false",
        *extra,
    ]


def run_medlit(overrides: list[str], out: Path, in_process: bool = False) -> dict:
    """`train.py` with `overrides` and the throughput callback writing to `out`; its report."""
    overrides = [
        *overrides,
        f"paths.log_dir={out.parent / 'logs'}",
        "+callbacks.throughput._target_=medlit.training.callbacks.Throughput",
        f"+callbacks.throughput.path={out}",
    ]
    if in_process:
        from medlit.training.run import train

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
def flops_per_example(model: str, overrides: list[str], output_dir: Path) -> tuple[float, float, str]:
    """Training FLOPs of one example, 3 x its forward FLOPs (backward costs about twice the forward); what
    torch.utils.flop_counter counts for forward + backward; and a note on how the first was reached.

    The counter counts the backward of a grouped (depthwise) convolution as if it were dense, so the bound
    takes 3 x the forward. It does not see LSTMs (on CPUs `aten.mkldnn_rnn_layer`) at all: a text model's
    LSTMs are counted by `lstm_flops_per_word` over the training reviews' mean length instead."""
    import torch
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from medlit.data.vocabulary import PAD_ID, UNK_ID

    cfg = compose(overrides, output_dir)
    net, batch = instantiate(cfg.model).train(), 4
    if MODELS[model][0] == "reviews":  # token ids, as many as the training reviews' mean length
        words = float((data_module(cfg).train_set.ids != PAD_ID).sum(dim=1).float().mean())
        x = torch.full((batch, max(1, round(words))), UNK_ID)
        lstm = lstm_flops_per_word(net) * words
        note = (
            f"{model}: the counter does not count LSTMs, so its figure leaves them out; the bound's adds them "
            "from the layer sizes (2 x 4H x (input + H) FLOPs per word, layer and direction, matrix products "
            f"only) over the training reviews' mean length, {words:.0f} words. Padding up to a batch's longest "
            "review is work neither counts."
        )
    else:
        size = cfg.data.image_size
        x, lstm, note = torch.randn(batch, cfg.data.in_channels, size, size), 0.0, ""
    with FlopCounterMode(display=False) as forward:
        out = net(x)
    with FlopCounterMode(display=False) as both:
        net(x).sum().backward()
    del out
    return 3 * (forward.get_total_flops() / batch + lstm), both.get_total_flops() / batch, note


def lstm_flops_per_word(net) -> float:
    """Forward FLOPs per word of the `nn.LSTM`s in `net`: the gates' matrix products, per layer and
    direction 2 x 4 hidden x (input + hidden)."""
    from torch import nn

    total = 0.0
    for lstm in (m for m in net.modules() if isinstance(m, nn.LSTM)):
        directions = 2 if lstm.bidirectional else 1
        for layer in range(lstm.num_layers):
            inputs = lstm.input_size if layer == 0 else directions * lstm.hidden_size
            total += directions * 2 * 4 * lstm.hidden_size * (inputs + lstm.hidden_size)
    return total


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
    from medlit.training.callbacks import step_rates as rates

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
    data = prepare_data(args, work)
    sources = {
        unit: data_overrides(unit, path, work) + (SMOKE[unit] if args.smoke else []) for unit, path in data.items()
    }
    print(
        f"# medlit training throughput\n\ndata: {', '.join(f'{unit} from {path}' for unit, path in data.items())}; "
        f"{args.repeats} repeat(s), medians; model and lever runs {args.steps} steps x {args.epochs} epochs, "
        f"Keras runs {args.keras_epochs} whole epochs; {load()}\n",
        flush=True,
    )
    counter = iter(range(10**6))

    def out() -> Path:
        folder = work / f"run{next(counter)}"
        folder.mkdir()
        return folder / "throughput.json"

    if args.models:
        compare_with_hand_loop(args, sources, work, limits, out)
    if args.levers:
        compare_levers(args, sources["images"], work, limits, out)
    if args.keras:
        compare_with_keras(args, data["images"], work, out)
    if args.cold:
        cold_start(args, Path(args.cold), work, out)
    print(f"\n{load()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a chest X-ray folder with train/<class>/ (default: generated JPEGs)")
    parser.add_argument(
        "--per-class", type=int, default=200, help="images per class (a subset of --data); generated reviews too"
    )
    parser.add_argument(
        "--imdb", help="an aclImdb folder's parent or an aclImdb_v1.tar.gz-style archive (default: generated reviews)"
    )
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch and run")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of %(default)s; '' for none")
    parser.add_argument("--levers", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keras", action="store_true", help="compare whole epochs with the Keras pipeline")
    parser.add_argument("--keras-epochs", type=int, default=3)
    parser.add_argument("--cold", help="first epoch from an empty cache on this folder, against Keras")
    parser.add_argument("--smoke", action="store_true", help="a few tiny in-process steps (a test)")
    parser.add_argument("--hand-loop", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    if args.smoke:  # the first model of each kind
        args.per_class, args.steps, args.epochs, args.repeats, args.levers = 16, 2, 2, 1, False
        first = {}
        for model in args.models:
            first.setdefault(MODELS[model][0], model)
        args.models = list(first.values())
    return args


def prepare_data(args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """Where the runs' images and reviews come from, each only if a run needs it."""
    units, data = {MODELS[m][0] for m in args.models}, {}
    if "images" in units or args.levers or args.keras:
        if args.data:
            data["images"] = subset_folder(Path(args.data), work / "data", args.per_class)
        else:
            data["images"] = generated_folder(work, args.per_class, size=64 if args.smoke else 224)
    if "reviews" in units:
        data["reviews"] = Path(args.imdb) if args.imdb else generated_reviews(work, args.per_class)
    return data


def data_overrides(unit: str, source: Path, work: Path) -> list[str]:
    """Overrides that train on `source`, images or reviews as `unit` says."""
    return image_data(source, work / "cache") if unit == "images" else text_data(source, work)


def compare_with_hand_loop(args, sources: dict[str, list[str]], work: Path, limits: list[str], out) -> None:
    """medlit against the hand-written loop, per model, and both against the FLOP bound; a table for each
    kind of example (images, reviews)."""
    from hydra.utils import instantiate

    rows, bound_rows, notes = defaultdict(list), defaultdict(list), []
    for model in args.models:
        unit = MODELS[model][0]
        overrides = medlit_overrides(model, sources[unit], limits)
        # extracted, decoded or tokenised once, before any clock runs: every run starts from the cache
        instantiate(compose(overrides, work / "prepare").data).prepare_data()
        results = {"medlit": [], "hand-written loop": []}
        for _ in range(args.repeats):
            results["medlit"].append(run_medlit(overrides, out(), in_process=args.smoke))
            results["hand-written loop"].append(
                run_hand_loop(overrides, out(), args.steps, args.epochs, in_process=args.smoke)
            )
        summary = {name: summarise(reports) for name, reports in results.items()}
        for name, row in summary.items():
            rows[unit].append([model, name, *row.values()])
        overhead = 1 - summary["medlit"]["examples/s"] / summary["hand-written loop"]["examples/s"]
        rows[unit].append([model, "**framework overhead**", f"**{overhead:+.1%}** {unit}/s", "", "", "", "", ""])
        cfg = compose(overrides, work / "flops")
        precision = "bfloat16" if str(cfg.trainer.precision).startswith("bf16") else "float32"
        flops, counted, note = flops_per_example(model, overrides, work / "flops")
        peak = matmul_flops_per_s(precision)
        notes += [note] if note else []
        for name, row in summary.items():
            achieved = flops * row["examples/s"]
            fraction = f"{achieved / peak:.1%}"
            bound_rows[unit].append(
                [model, name, precision, flops / 1e9, counted / 1e9, achieved / 1e9, peak / 1e9, fraction]
            )
    print("## medlit and a hand-written PyTorch loop (same network, data, batches, precision and optimiser)\n")
    header = ["model", "run", "{unit}/s", "data wait", "step (s)", "epoch train (s)", "startup (s)", "peak RSS (MB)"]
    print(tables(header, rows), f"\n\n{load()}\n", flush=True)
    print("## Against the FLOP bound (a 2048x2048 matrix product in the same precision)\n")
    header = [
        "model",
        "run",
        "precision",
        "GFLOP/{example} (3x fwd)",
        "counter fwd+bwd",
        "GFLOP/s reached",
        "matmul GFLOP/s",
    ]
    header.append("fraction")
    print(tables(header, bound_rows), *[f"\n\n{note}" for note in notes], f"\n\n{load()}\n", flush=True)


def tables(header: list[str], rows: dict[str, list[list]]) -> str:
    """A table per kind of example (`rows`' keys, e.g. images), `{unit}` and `{example}` in `header` named
    after it."""
    return "\n\n".join(
        table([h.format(unit=unit, example=unit.removesuffix("s")) for h in header], unit_rows)
        for unit, unit_rows in rows.items()
    )


def summarise(reports: list[dict]) -> dict:
    """Medians over repeats of: later-epoch examples/s and data wait, step time, epoch time, startup, RSS."""
    later = [later_epochs(r) for r in reports]
    epochs = [e["train_time"] for r in reports for e in r["epochs"][1:]] or [
        r["epochs"][0]["train_time"] for r in reports
    ]
    return {
        "examples/s": median([x["images_per_s"] for x in later]),
        "data wait": f"{median([x['data_wait'] for x in later]):.1%}",
        "step (s)": median([x["step_time"] for x in later]),
        "epoch train (s)": median(epochs),
        "startup (s)": median([r["startup"] for r in reports]),
        "peak RSS (MB)": median([r["peak_rss_mb"] for r in reports]),
    }


def compare_levers(args, data: list[str], work: Path, limits: list[str], out) -> None:
    """Each lever against the default (custom_cnn on `data`, image overrides), interleaved and repeated."""
    results, failed = {name: [] for name in LEVERS}, {}
    cfg = compose(medlit_overrides("custom_cnn", data, limits), work / "defaults")
    defaults = {
        f"trainer.precision={cfg.trainer.precision}",
        f"classifier.channels_last={str(cfg.classifier.channels_last).lower()}",
    }
    defaults |= {f"data.num_workers={cfg.data.num_workers}"}
    for _ in range(args.repeats):
        for name, extra in LEVERS.items():
            if extra and extra[0] in defaults:
                continue  # the default already
            overrides = medlit_overrides("custom_cnn", data, [*limits, *extra])
            try:
                results[name].append(run_medlit(overrides, out()))
            except RuntimeError as err:  # a lever that fails here is reported, not fatal
                failed[name] = str(err).strip().splitlines()[-1][:200]
    base = summarise(results["default"])["examples/s"]
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
                row["examples/s"],
                f"{row['examples/s'] / base:.2f}x",
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
    overrides = medlit_overrides(
        "custom_cnn", image_data(data, work / "cache"), [f"trainer.max_epochs={args.keras_epochs}"]
    )
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
        overrides = medlit_overrides("custom_cnn", image_data(folder, cache), ["trainer.max_epochs=1"])
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
