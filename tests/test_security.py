"""Checkpoints, images, archives and caches from strangers: each attack is refused safely, with one clear line."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from PIL import Image

from medlit.cli.eval import evaluate_checkpoint
from medlit.cli.explain import explain
from medlit.cli.export import export
from medlit.cli.predict import hydra_main as predict_main
from medlit.cli.predict import predict
from medlit.cli.serve import serve
from medlit.data import archive, decode, image_cache
from medlit.data.chest_xray import ChestXrayDataModule
from medlit.data.imdb import IMDBDataModule
from medlit.data.integrity import DIGEST_KEY
from medlit.deploy.predictor import Predictor
from medlit.errors import DataError, MedlitError, UnreadableInput, UntrustedInput
from medlit.models import BaselineCNN
from medlit.training.checkpoint import AtomicCheckpointIO, load_checkpoint
from medlit.training.classifier import Classifier
from medlit.training.run import train
from medlit.training.trusted import ALLOWED_TARGETS, check_run_config
from tests.conftest import CONF, ROOT, compose_config, launch_in_process
from tests.crafted import write_checkpoint, write_dicom_bomb, write_png, write_zip_bomb
from tests.synthetic import write_dicom, write_xray_folder


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "scan.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(path)
    return path


def planted(marker: Path):
    """Stored configurations an attacker writes, each of which would create `marker` if it were built."""
    path = str(marker)
    return {
        "write_text": ("model", {"_target_": "pathlib.Path.write_text", "data": "owned",
                                 "self": {"_target_": "pathlib.Path", "_args_": [path]}}),
        "copyfile": ("data.train_transform", {"_target_": "torchvision.transforms.v2.Compose", "transforms": [
            {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip"},
            {"_target_": "shutil.copyfile", "src": __file__, "dst": path}]}),
        "open": ("classifier", {"_target_": "builtins.open", "file": path, "mode": "w"}),
        "ensure_dir": ("model.name", f"${{ensure_dir:{path}}}"),
        "args": ("model._args_", [path]),
    }  # fmt: skip


def plant(key: str, value, **more):
    """A change to a stored configuration: `key` (dotted) set to `value`, and `more` keys (with `__` for dots)."""
    changes = {key: value, **{name.replace("__", "."): item for name, item in more.items()}}

    def change(config: dict) -> None:
        for dotted, item in changes.items():
            *parents, last = dotted.split(".")
            node = config
            for parent in parents:
                node = node[parent]
            node[last] = item

    return change


@pytest.mark.parametrize(
    ("attack", "refused"),
    [
        ("write_text", r"model\._target_='pathlib\.Path\.write_text'"),
        ("copyfile", r"data\.train_transform\.transforms\[1\]\._target_='shutil\.copyfile'"),
        ("open", r"classifier\._target_='builtins\.open'"),
        ("ensure_dir", r"key model\.name holds an interpolation \('\$\{ensure_dir:"),
        ("args", r"sets model\._args_, which medlit never stores"),
    ],
)
def test_medlit_predict_refuses_a_checkpoint_whose_configuration_would_write_a_file(
    attack, refused, tmp_path, image, monkeypatch, capsys
):
    marker = tmp_path / "owned"
    ckpt = write_checkpoint(tmp_path / "evil.ckpt", plant(*planted(marker)[attack]))
    with pytest.raises(SystemExit) as exit_:
        launch_in_process(monkeypatch, predict_main, ["medlit predict", f"ckpt_path={ckpt}", f"inputs=[{image}]"])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("medlit: error:")]
    assert line.startswith(f"medlit: error: refusing {ckpt}: its stored configuration") and "Traceback" not in err
    assert re.search(refused, line), line
    assert not marker.exists()


def entry_points(ckpt: Path, tmp_path: Path, image: Path):
    """Every command that rebuilds a run from a stored configuration, called as its command line calls it."""
    out = tmp_path / "out"
    return {
        "eval": lambda: evaluate_checkpoint(compose_config([f"ckpt_path={ckpt}"], out, "eval")),
        "explain": lambda: explain(compose_config([f"ckpt_path={ckpt}"], out, "explain")),
        "predict": lambda: predict(compose_config([f"ckpt_path={ckpt}", f"inputs=[{image}]"], out, "predict")),
        "export": lambda: export(compose_config([f"ckpt_path={ckpt}"], out, "export")),
        "serve": lambda: serve(compose_config([f"ckpt_path={ckpt}"], out, "serve")),
        "resume": lambda: train(compose_config([f"resume={ckpt.parents[1]}"], out)),
    }


@pytest.mark.parametrize("command", ["eval", "explain", "predict", "export", "serve", "resume"])
def test_every_command_reading_a_stored_configuration_refuses_a_foreign_target(command, tmp_path, image):
    marker = tmp_path / "owned"
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", plant(*planted(marker)["write_text"]))
    with pytest.raises(UntrustedInput, match=r"sets model\._target_='pathlib\.Path\.write_text'"):
        entry_points(ckpt, tmp_path, image)[command]()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (plant("data.image_size", 100_000), r"data\.image_size=100000, outside 1-4096; name data\.image_size on the"),
        (plant("data.max_len", 10**9), r"data\.max_len=1000000000, outside 1-8192"),
        (plant("data.num_workers", 5000), r"data\.num_workers=5000, outside 0-64"),
        (plant("data.batch_size", 128, data__image_size=4096), r"data\.batch_size=128 of 1 x 4096 x 4096 images"),
        (plant("model.filters", 100_000), r"net\.features\.0\.weight is \(100000, 1, 3, 3\) there and \(4, 1, 3, 3\)"),
        (plant("data.data_dir", "${oc.env:HOME}"), r"key data\.data_dir holds an interpolation"),
        (plant("model._partial_", True), r"sets model\._partial_, which medlit never stores"),
        (plant("model._convert_", "all"), r"sets model\._convert_"),
        (plant("data.archive", "../../.bashrc"), r"stored data\.archive='\.\./\.\./\.bashrc' is not a file name"),
    ],
    ids=["image_size", "max_len", "workers", "batch", "width", "env", "partial", "convert", "archive"],
)
def test_sizes_shapes_and_interpolations_of_a_stored_configuration_are_checked_before_allocating(
    change, refused, tmp_path
):
    ckpt = write_checkpoint(tmp_path / "evil.ckpt", change)
    with pytest.raises(UntrustedInput, match=refused):
        Predictor.from_checkpoint(ckpt)


def test_a_rebuilt_run_downloads_from_the_official_source_only(tmp_path):
    evil = plant("data.url", "http://evil.example/a.npz", data__mirrors=["http://evil.example/b"], data__md5="0" * 32)
    ckpt = write_checkpoint(tmp_path / "run.ckpt", evil)
    data = Predictor.from_checkpoint(ckpt).run.datamodule
    assert data.urls == [data.official_url] and data.md5 == data.official_md5


def test_evaluating_on_data_whose_classes_come_in_another_order_is_refused(medmnist_dir, tmp_path):
    ckpt = write_checkpoint(tmp_path / "run.ckpt", class_names=("pneumonia", "normal"))  # "normal" was class 1
    cfg = compose_config([f"ckpt_path={ckpt}", f"data.data_dir={medmnist_dir}"], tmp_path / "eval", "eval")
    with pytest.raises(MedlitError, match=r"trained with the classes pneumonia, normal in this order, but the data "
                                          r"gives normal, pneumonia: the labels would be swapped"):  # fmt: skip
        evaluate_checkpoint(cfg)


def test_a_size_named_on_the_command_line_is_the_users_own(tmp_path, image):
    ckpt = write_checkpoint(tmp_path / "evil.ckpt", plant("data.num_workers", 5000))
    rows = predict(
        compose_config([f"ckpt_path={ckpt}", f"inputs=[{image}]", "+data.num_workers=0"], tmp_path, "predict")
    )
    assert rows[0].error is None and len(rows[0].probabilities) == 2


def targets_of(node) -> set[str]:
    if isinstance(node, dict):
        return {v for k, v in node.items() if k == "_target_"} | {t for v in node.values() for t in targets_of(v)}
    if isinstance(node, list):
        return {t for v in node for t in targets_of(v)}
    return set()


TEXT_MODELS = ("bilstm", "fasttext", "text_ffn", "text_transformer")
IMAGE_DATA = ("pneumoniamnist", "chest_xray", "organcmnist")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def every_choice() -> list[list[str]]:
    """Runs that between them compose every config of every group: one per network (with data it can read and
    the other groups' choices in turn), every callback and logger at once, and one per experiment and search."""
    runs = []
    for i, model in enumerate(options("model")):
        run = [f"model={model}", f"data={'imdb' if model in TEXT_MODELS else IMAGE_DATA[i % len(IMAGE_DATA)]}"]
        for group in ("classifier", "optimizer", "scheduler", "trainer", "debug", "paths"):
            run.append(f"{group}={options(group)[i % len(options(group))]}")
        runs.append(run)
    for group in ("callbacks", "logger"):
        runs[0].append(f"{group}=[{','.join(name for name in options(group) if name not in ('default', 'none'))}]")
    runs.append(["data=image_table", "data.num_classes=3"])  # a run stores the number of classes it found
    return runs + [[f"experiment={name}"] for name in options("experiment")] + [["hparams_search=optuna"]]


def test_the_allow_list_is_exactly_the_targets_of_the_shipped_configs_and_they_pass_the_checks(tmp_path):
    found, composed = set(), set()
    for i, choice in enumerate(every_choice()):
        cfg = compose_config(choice, tmp_path / str(i))
        composed |= set(HydraConfig.get().runtime.choices.items())
        found |= targets_of(OmegaConf.to_container(cfg, resolve=False))
        check_run_config(OmegaConf.to_container(cfg, resolve=True), " ".join(choice))  # a run of it rebuilds
    groups = [p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("__pycache__", "hydra")]
    assert {(group, name) for group in groups for name in options(group)} - composed <= {
        ("callbacks", name) for name in options("callbacks")
    } | {("logger", name) for name in options("logger")}
    assert found == ALLOWED_TARGETS, (found - ALLOWED_TARGETS, ALLOWED_TARGETS - found)
    refused = {"pathlib.Path", "builtins.open", "builtins.eval", "shutil.copyfile", "os.system", "subprocess.run",
               "hydra.utils.get_method", "hydra.utils.get_class"}  # fmt: skip
    assert not refused & ALLOWED_TARGETS


def test_medlit_trusted_targets_allows_a_users_own_class(tmp_path, monkeypatch):
    own = "tests.helpers.KillAt"
    config = {"callbacks": {"kill": {"_target_": own, "epoch": 9, "batch": 0}}}
    with pytest.raises(UntrustedInput, match=r"callbacks\.kill\._target_='tests\.helpers\.KillAt'"):
        check_run_config(config, "run.ckpt")
    monkeypatch.setenv("MEDLIT_TRUSTED_TARGETS", f"torch.nn.Linear, {own}")
    check_run_config(config, "run.ckpt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"epoch": 3}, r"is not a Lightning checkpoint: it has no state_dict of weights \(its keys: epoch\)"),
        ({"state_dict": {"net.w": "not a tensor"}}, r"state_dict\['net\.w'\] is a str, not a tensor"),
    ],
)
def test_a_checkpoint_without_weights_is_one_line_not_a_traceback(
    content, message, tmp_path, image, monkeypatch, capsys
):
    ckpt = tmp_path / "odd.ckpt"
    torch.save(content, ckpt)
    with pytest.raises(SystemExit):
        launch_in_process(monkeypatch, predict_main, ["medlit predict", f"ckpt_path={ckpt}", f"inputs=[{image}]"])
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("medlit: error:")]
    assert "Traceback" not in err and re.search(message, line), err


def test_resume_with_fewer_epochs_than_trained_is_one_line(tmp_path):
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["epoch"] = 4  # five epochs trained
    AtomicCheckpointIO().save_checkpoint(checkpoint, ckpt)
    with pytest.raises(MedlitError, match=r"has trained 5 epochs, more than trainer\.max_epochs=2; set trainer\.max"):
        train(compose_config([f"resume={tmp_path / 'run'}", "trainer.max_epochs=2"], tmp_path / "out"))


def flip_byte_in(path: Path, marker: bytes) -> None:
    """Change one bit of the first occurrence of `marker` in the file (inside a tensor's data)."""
    data = bytearray(path.read_bytes())
    at = data.index(marker)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_a_checkpoint_are_detected_and_it_stays_loadable_by_torch_and_lightning(tmp_path):
    ckpt = write_checkpoint(tmp_path / "run.ckpt")
    stored = torch.load(ckpt, weights_only=True)  # plain torch: the digest is one more string
    assert len(stored[DIGEST_KEY]) == 64
    model = Classifier.load_from_checkpoint(ckpt, net=BaselineCNN(1, 2, 28, filters=4), weights_only=True)
    assert torch.equal(model.net.features[0].weight, stored["state_dict"]["net.features.0.weight"])
    assert DIGEST_KEY not in load_checkpoint(ckpt)

    weights = stored["state_dict"]["net.features.0.weight"]
    flip_byte_in(ckpt, weights.numpy().tobytes()[:16])
    assert torch.load(ckpt, weights_only=True)["state_dict"]["net.features.0.weight"].ne(weights).sum() == 1
    with pytest.raises(MedlitError, match=r"run\.ckpt is damaged: its content does not match the SHA-256 digest"):
        load_checkpoint(ckpt)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({key: value for key, value in stored.items() if key != DIGEST_KEY}, foreign)
    assert set(load_checkpoint(foreign)) == set(stored) - {DIGEST_KEY}  # no digest: loaded as it is


def test_the_partial_file_of_a_killed_write_is_removed_at_the_next_write(tmp_path):
    path = tmp_path / "last.ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".last.ckpt.{dead.stdout.strip()}.partial"
    left.write_bytes(b"half a checkpoint")
    running = tmp_path / f".last.ckpt.{os.getppid()}.partial"  # a process that is still writing
    running.write_bytes(b"in progress")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    assert not left.exists() and running.exists()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_a_damaged_image_cache_is_decoded_again(tmp_path, caplog):
    root = write_xray_folder(tmp_path / "xray", bad_files=False)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpeg"))
    first = image_cache.load_or_decode(root, files, 16, tmp_path / "cache", workers=1)
    (cache,) = (tmp_path / "cache").glob("*.pt")
    flip_byte_in(cache, first.images[3].numpy().tobytes()[:48])
    with caplog.at_level(logging.WARNING):
        again = image_cache.load_or_decode(root, files, 16, tmp_path / "cache", workers=1)
    assert f"The cache {cache} is unreadable (its content does not match its digest)" in caplog.text
    assert again.decoded == len(files) and torch.equal(again.images, first.images)
    assert image_cache.load_or_decode(root, files, 16, tmp_path / "cache", workers=1).decoded == 0  # rewritten


def test_a_damaged_token_cache_is_tokenised_again(imdb_dir, tmp_path, caplog):
    def setup() -> IMDBDataModule:
        dm = IMDBDataModule(str(imdb_dir), cache_dir=str(tmp_path), max_len=16, vocab_size=40)
        dm.prepare_data()
        dm.setup()
        return dm

    first = setup()
    flip_byte_in(first.cache_path, first.train_set.ids[5].numpy().tobytes())
    with caplog.at_level(logging.WARNING):
        again = setup()
    assert "unreadable (its content does not match its digest)" in caplog.text
    assert again.tokenised and torch.equal(again.train_set.ids, first.train_set.ids)


MEASURE = """
import json, resource, sys, time
from medlit.data.decode import decode_file
from medlit.errors import UnreadableInput
for warm in sys.argv[2:]:  # PIL's and pydicom's decoders loaded: growth is the file's alone
    decode_file(warm, 32)
data = open(sys.argv[1], "rb").read()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start, error = time.perf_counter(), None
try:
    decode_file(data, 224, "upload")
except UnreadableInput as err:
    error = str(err)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
print(json.dumps({"grown_mb": grown, "seconds": time.perf_counter() - start, "error": error}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bomb", "declared"),
    [("dicom_8000", "8000 x 8000 pixels (64.0 M)"), ("png16_12000", "12000 x 12000 pixels (144.0 M)")],
)
def test_decompression_bombs_are_refused_from_their_headers_with_little_memory(bomb, declared, tmp_path):
    """A 125 KB deflated DICOM of 8000 x 8000 16-bit pixels and a 280 KB PNG of 12000 x 12000: the peak memory of
    the process that decodes them (a subprocess, so nothing else counts) grows by less than 100 MB."""
    path = write_dicom_bomb(tmp_path / "bomb.dcm") if bomb.startswith("dicom") else None
    path = path or write_png(tmp_path / "bomb.png", shape=(12000, 12000))
    small_png = write_png(tmp_path / "small.png", np.arange(64, dtype=np.uint16).reshape(8, 8))
    small_dcm = write_dicom(tmp_path / "small.dcm", np.full((8, 8), 7))
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(small_png), str(small_dcm)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout)
    print(f"{bomb}: {path.stat().st_size / 1e3:.0f} KB, peak memory +{measured['grown_mb']:.1f} MB, "
          f"{measured['seconds'] * 1e3:.1f} ms")  # fmt: skip
    assert (
        measured["error"]
        == f"upload is too large to decode: it declares {declared}, more than the limit of 36.0 M (max_pixels)"
    )
    assert measured["grown_mb"] < 100


def test_the_pixel_budget_counts_frames_and_the_frame_inside_a_compressed_dicom(tmp_path):
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    many = dcmread(write_dicom(tmp_path / "frames.dcm", np.zeros((100, 100))))
    many.NumberOfFrames = 4000  # 40 M pixels, however few are stored
    many.save_as(tmp_path / "frames.dcm")
    with pytest.raises(UnreadableInput, match=r"declares 4000 frames of 100 x 100 pixels \(40\.0 M\)"):
        decode.decode_file(tmp_path / "frames.dcm", 32)

    jpeg = tmp_path / "big.jpeg"
    Image.new("L", (7000, 6000)).save(jpeg)
    wrapped = dcmread(write_dicom(tmp_path / "wrapped.dcm", np.zeros((64, 64))))  # the header says 64 x 64
    wrapped.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    wrapped.BitsAllocated, wrapped.BitsStored, wrapped.HighBit = 8, 8, 7
    wrapped.PixelData = encapsulate([jpeg.read_bytes()])
    wrapped.save_as(tmp_path / "wrapped.dcm")
    with pytest.raises(UnreadableInput, match=r"wrapped\.dcm is too large to decode: it declares 7000 x 6000 pixels"):
        decode.decode_file(tmp_path / "wrapped.dcm", 32)
    with pytest.raises(UnreadableInput, match=r"the compressed frame is 7000 x 6000 pixels, the header says 64 x 64"):
        decode.decode_file(tmp_path / "wrapped.dcm", 32, max_pixels=50_000_000)


def test_only_the_listed_formats_are_decoded(tmp_path):
    eps = tmp_path / "scan.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert Image.open(eps).format == "EPS"  # PIL alone would hand it to Ghostscript to decode
    with pytest.raises(UnreadableInput, match=r"scan\.eps is not a readable image \(UnidentifiedImageError"):
        decode.decode_file(eps, 16)


def test_a_12_bit_png_decodes_to_the_full_range_and_declared_bits_are_kept(tmp_path):
    xray = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    grey = decode.decode_file(write_png(tmp_path / "xray12.png", xray), 64)
    assert grey.min() == 0 and grey.max() == 255
    assert abs(int(grey[32, 32]) - 128) <= 2  # the middle of the ramp, not 2048 / 257 = 8
    dark = decode.decode_file(write_png(tmp_path / "dark12.png", xray // 2, sbit=12), 64)  # 0-2047 of 12 bits
    assert dark.max() == 127 and dark.min() == 0  # 2047 / 4095 of the range, where a stretch would give 255


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    bomb = write_zip_bomb(tmp_path / "bomb.zip", 300 << 20)
    assert bomb.stat().st_size < 400_000
    with pytest.raises(DataError, match=r"bomb\.zip unpacks to 300 MB, 1,0\d\d times its size .*decompression bomb"):
        archive.unpack(bomb, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_archives_with_too_many_members_or_bytes_are_refused(tmp_path, monkeypatch):
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i}.txt").write_text("x" * 1000)
    with zipfile.ZipFile(tmp_path / "six.zip", "w") as handle:
        for path in folder.iterdir():
            handle.write(path, path.name)
    with tarfile.open(tmp_path / "six.tar.gz", "w:gz") as handle:
        handle.add(folder, "files")
    monkeypatch.setattr(archive, "MAX_MEMBERS", 5)
    for name in ("six.zip", "six.tar.gz"):
        with pytest.raises(DataError, match=rf"{name} holds more than 5 members \(MAX_MEMBERS\)"):
            archive.unpack(tmp_path / name, tmp_path / f"out-{name}")
    monkeypatch.setattr(archive, "MAX_MEMBERS", 100)
    monkeypatch.setattr(archive, "MAX_BYTES", 5000)
    with pytest.raises(DataError, match=r"six\.tar\.gz unpacks to more than 4\.\d+e-06 GB \(MAX_BYTES\)"):
        archive.unpack(tmp_path / "six.tar.gz", tmp_path / "out")
    monkeypatch.setattr(archive, "MAX_BYTES", 6000)
    assert len(list(archive.unpack(tmp_path / "six.zip", tmp_path / "out").iterdir())) == 6


def rename_class_folder(root: Path, old: str, new: str) -> None:
    for split in ("train", "val", "test"):
        (root / split / old).rename(root / split / new)


def test_a_lowercase_normal_folder_keeps_pneumonia_as_the_positive_class(tmp_path):
    root = write_xray_folder(tmp_path / "xray", bad_files=False)
    rename_class_folder(root, "NORMAL", "normal")
    assert sorted(["normal", "PNEUMONIA"]) == ["PNEUMONIA", "normal"]  # sorted, normal would be class 1
    dm = ChestXrayDataModule(str(root), image_size=16, num_workers=0, decode_workers=1)
    dm.setup("fit")
    assert dm.class_names == ["normal", "PNEUMONIA"]
    for split in ("train", "val", "test"):
        labels = getattr(dm, f"{split}_set").labels.tolist()
        folders = [Path(name).parts[1] for name in dm.split_files[split]]
        assert all(label == (folder == "PNEUMONIA") for label, folder in zip(labels, folders, strict=True))
    assert ChestXrayDataModule(str(root), positive_class="Normal").class_names == ["PNEUMONIA", "normal"]


def test_an_absent_positive_class_is_named_and_more_classes_ignore_it(tmp_path, caplog):
    root = write_xray_folder(tmp_path / "xray", bad_files=False)
    rename_class_folder(root, "PNEUMONIA", "sick")
    with pytest.raises(
        DataError, match=r"data\.positive_class=PNEUMONIA is none of the class folders of .*train \(NORMAL, sick\)"
    ):
        ChestXrayDataModule(str(root)).class_names  # noqa: B018
    for split in ("train", "val", "test"):
        (root / split / "COVID").mkdir()
        (root / split / "COVID" / "a.jpeg").write_bytes((root / split / "NORMAL").iterdir().__next__().read_bytes())
    assert ChestXrayDataModule(str(root)).class_names == ["COVID", "NORMAL", "sick"]


def test_classes_of_test_and_val_that_train_lacks_are_named(tmp_path, caplog):
    root = write_xray_folder(tmp_path / "xray", bad_files=False)
    (root / "test" / "COVID").mkdir()
    (root / "test" / "COVID" / "x.jpeg").write_bytes(b"")
    dm = ChestXrayDataModule(str(root), image_size=16, val_strategy="official", cache_dir=None, decode_workers=1)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert f"{root / 'test'} has class folders that train/ lacks, left out: COVID" in caplog.text
    assert caplog.text.count("lacks") == 1
