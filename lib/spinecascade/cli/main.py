"""One entry point, one module per subcommand: each module has `register(subparsers)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from spinecascade import __version__
from spinecascade.errors import SpineCascadeError

# Subcommand name -> module under spinecascade.cli; imported lazily so `cobb` never pays for torch.
COMMANDS: dict[str, str] = {
    "cobb": "cobb_cmd",
    "check-labels": "check_labels_cmd",
    "convert": "convert_cmd",
    "train": "train_cmd",
    "predict": "predict_cmd",
    "evaluate": "evaluate_cmd",
    "benchmark": "benchmark_cmd",
    "synth": "synth_cmd",
}


def _command_module(name: str):
    return importlib.import_module(f"spinecascade.cli.{COMMANDS[name]}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spinecascade", description="Vertebral corner landmarks and Cobb angles on spinal X-rays."
    )
    parser.add_argument("--version", action="version", version=f"spinecascade {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen subcommand's module is imported, unless help for all is asked for.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name in COMMANDS:
        if chosen is None or name == chosen:
            _command_module(name).register(sub)
        else:
            sub.add_parser(name, help=_HELP.get(name, ""))
    return parser


_HELP = {
    "cobb": "Cobb angles (PT, MT, TL) and end vertebrae from a landmark file",
    "check-labels": "list labels that break the expected landmark structure",
    "convert": "convert between landmark label formats",
    "train": "train a named recipe on an AASCE-layout dataset",
    "predict": "find the 68 corners and the Cobb angles on X-ray images",
    "evaluate": "evaluate a model on an AASCE-layout split",
    "benchmark": "latency, throughput and memory of prediction on this machine",
    "synth": "write synthetic spine radiographs with exact landmarks",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(_command_module(args.command).run(args) or 0)
    except SpineCascadeError as exc:
        print(f"spinecascade {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"spinecascade {args.command}: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spinecascade {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
