"""Write an image table (CSV) of a chest X-ray folder, for `data=image_table`: one row per image file.

    python benchmarks/make_manifest.py /data/chest_xray_224 /tmp/xray/manifest.csv
    python benchmarks/make_manifest.py /data/chest_xray_224 /tmp/xray/manifest.csv --labels pathogen

Columns: `path` (relative to the table's folder when the images are under it, else absolute), `label` (the class
folder, or with `--labels pathogen` NORMAL, BACTERIAL or VIRAL), `patient` and `split` (the split folder). The
files, labels and patients are those `data=chest_xray` lists, in its order (split, class, file name), so a run on
the table with the same split settings and seed draws the same splits and batches:

    python train.py experiment=xray_best data.data_dir=/data/chest_xray_224 data.test_strategy=split
    python train.py experiment=xray_best data=image_table data.table=/tmp/xray/manifest.csv \\
        data.patient_column=patient data.split_column=split data.test_strategy=split
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medlit.data.chest_xray import LABELS, ChestXrayDataModule  # noqa: E402  (after the path is set)
from medlit.errors import MedlitError  # noqa: E402


def manifest_rows(data_dir: Path, table: Path, labels: str = "folders") -> list[dict[str, str]]:
    """The rows of the table of `data_dir`'s images, to be written at `table`."""
    module = ChestXrayDataModule(str(data_dir), labels=labels, val_strategy="split", test_strategy="split")
    listing = module.listing  # every split folder there is, listed as the data module lists it
    folder = table.resolve().parent
    rows = []
    for split, listed in listing.splits.items():
        for name, label, patient in zip(listed.files, listed.labels, listed.patients, strict=True):
            image = (listing.root / name).resolve()
            path = image.relative_to(folder) if image.is_relative_to(folder) else image
            rows.append({"path": str(path), "label": listing.class_names[label], "patient": patient, "split": split})
    return rows


def write_manifest(data_dir: Path, table: Path, labels: str = "folders") -> int:
    """Write the table; the number of rows."""
    rows = manifest_rows(data_dir, table, labels)
    table.parent.mkdir(parents=True, exist_ok=True)
    partial = table.with_name(f".{table.name}.{os.getpid()}.partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "patient", "split"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, table)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the folder that holds train/ (and val/, test/ if there are)")
    parser.add_argument("table", type=Path, help="the CSV file to write")
    parser.add_argument("--labels", choices=LABELS, default="folders", help="class folders, or the pathogen")
    args = parser.parse_args(argv)
    try:
        count = write_manifest(args.data_dir, args.table, args.labels)
    except MedlitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{count} images listed in {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
