"""The commands: `medlit <command> [overrides]`, `python -m medlit <command>`, one short module each.

Each command module is a thin face over the library; none imports another. Hydra commands take
`key=value` overrides of their config (`conf/<command>.yaml`); `compare` and `download` take flags.
"""

from __future__ import annotations

import importlib
import sys

# command -> what it does (its module is medlit.cli.<command>)
COMMANDS = {
    "train": "train a model, select it on validation, test it once (the same as `python train.py`)",
    "eval": "evaluate a checkpoint on its test or validation split",
    "explain": "Grad-CAM, LIME, activations or Integrated Gradients for a checkpoint's decisions",
    "predict": "a checkpoint's predictions on new images (JPEG, PNG, DICOM) or reviews",
    "ensemble": "several checkpoints combined into one, its threshold chosen on validation",
    "export": "a checkpoint as ONNX or TorchScript, checked against PyTorch",
    "serve": "a web app for live predictions with their evidence",
    "compare": "finished runs side by side: settings, test metrics, ROC curves",
    "download": "fetch a data set and check it",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {what}" for name, what in COMMANDS.items()]
    return (
        "usage: medlit <command> [arguments]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "Hydra commands take key=value overrides (`medlit train --help` lists the config groups);\n"
        "`medlit compare --help` and `medlit download --help` list their flags.\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Run `medlit <command> ...`: the command's own main, with the rest of the command line."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage(), end="")
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"medlit: error: unknown command {command!r}\n\n{usage()}", end="", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"medlit.cli.{command}")
    sys.argv = [f"medlit {command}", *rest]
    module.main()
