"""`medlit download chest_xray`: fetch a data set, verify it and say where it went."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medlit.data import chest_xray
from medlit.errors import MedlitError


def main(argv: Sequence[str] | None = None) -> None:
    """Exit 0 with the data's place and counts printed, 1 with one line on stderr."""
    sys.exit(download(sys.argv[1:] if argv is None else argv))


def download(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="medlit download", description=__doc__.split(": ", 1)[1])
    parser.add_argument("dataset", choices=["chest_xray"])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDLIT_DATA_DIR", "data")),
        help="an archive from --url is unpacked in <data-dir>/chest_xray (default: $MEDLIT_DATA_DIR or "
        "./data); the Kaggle release stays in kagglehub's cache",
    )
    parser.add_argument("--url", help="a zip or tar archive of the data set, instead of Kaggle")
    parser.add_argument("--mirror", action="append", default=[], help="another URL to try; repeatable")
    parser.add_argument("--md5", help="the archive's expected MD5")
    args = parser.parse_args(argv)
    urls = [u for u in (args.url, *args.mirror) if u]
    try:
        root = chest_xray.download(args.data_dir, urls, args.md5)
        counts = chest_xray.count_images(root)
    except MedlitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for split, per_class in counts.items():
        official = chest_xray.OFFICIAL_COUNTS[split]
        note = "" if per_class == official else f" (the official release has {official})"
        print(f"{split}: {per_class}{note}")
    print(f"Chest X-rays are in {root}")
    print(f"Train on them with: medlit train data=chest_xray data.data_dir={root}")
    return 0


if __name__ == "__main__":
    main()
