"""`medlit compare`: finished runs side by side: what differs in their settings, their test metrics, their ROC curves.

medlit compare logs/train/multiruns/<time>                 # every job of a sweep
medlit compare logs/train/runs/<a> logs/train/runs/<b> -o comparison
medlit compare logs/train/multiruns/<time> --over seed     # replicates: runs that differ only in their seed

See `medlit.evaluation.compare` for the tables and the ROC overlay.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from medlit.cli.runner import fail
from medlit.errors import MedlitError
from medlit.evaluation.compare import REPLICATE_KEYS, compare

WRITTEN = ("comparison.md", "comparison.csv", "roc_overlay.png", "summary.md", "summary.csv")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="medlit compare", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or multirun directories")
    parser.add_argument("-o", "--output", type=Path, default=Path("comparison"), help="default: ./comparison")
    parser.add_argument(
        "--over",
        default=",".join(REPLICATE_KEYS),
        help="comma-separated settings whose runs are replicates, summarised as mean ± sd (default: seed,data.fold)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        table = compare(args.runs, args.output, [key for key in args.over.split(",") if key])
    except MedlitError as err:
        fail(str(err), 1)
    print(table)
    print("Written: " + ", ".join(str(args.output / name) for name in WRITTEN if (args.output / name).is_file()))


if __name__ == "__main__":
    main()
