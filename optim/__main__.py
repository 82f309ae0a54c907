"""``python -m optim``: run the compression pipeline described by a TOML file (by default the
shipped ``default_pipeline.toml``: LeNet-5 on the bundled MNIST-5k, pruned, shrunk, distilled,
quantized, graph-optimized and exported) and print the per-stage report."""
from __future__ import annotations

import argparse
import json
import sys
import textwrap

from optim.pipeline import PipelineError, run_pipeline
from optim.pipeline.config import (OPTIONS, RUN_OPTIONS, ConfigError, default_config_text,
                                   read_config_text, validate)

try:
    import tomllib
except ImportError:  # Python 3.10: the tomli backport, if installed
    import tomli as tomllib

# Command-line flags that override keys of the [run] table.
RUN_FLAGS = ("dataset", "data_root", "seed", "limit", "test_limit", "latency_repeats")


def _option_line(key: str, option) -> str:
    default = "" if option.default is None else f" (default {json.dumps(option.default)})"
    choices = f" [{' | '.join(option.choices)}]" if option.choices else ""
    bounds = f" {option.bounds()}" if option.bounds() else ""
    return f"  {key}{choices}{bounds}: {option.help}{default}"


def _stage_reference() -> str:
    lines = ["configuration keys:", "[run]"]
    lines += [_option_line(k, o) for k, o in RUN_OPTIONS.items()]
    lines.append("[[stage]] tables, in order; every stage takes type = \"...\", name = \"...\" "
                 "(default: the type) and enabled = true|false:")
    for kind, options in OPTIONS.items():
        lines.append(f"type = \"{kind}\"" + ("" if options else " (no options)"))
        lines += [_option_line(k, o) for k, o in options.items()]
    wrapped = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        wrapped += textwrap.wrap(line, 96, subsequent_indent=indent) or [""]
    return "\n".join(wrapped)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m optim", description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Artifacts: OUT/NN-<stage>/model.npz (packed model), stage.json (measurements), "
               "OUT/report.{txt,csv,json}, OUT/accuracy_vs_size.png (with matplotlib), "
               "OUT/NN-export/model.onnx (the compressed model as ONNX, int8 when quantized; "
               "with onnx). Re-running the same command skips the finished stages and resumes "
               "an interrupted one.\n\n" + _stage_reference())
    parser.add_argument("-c", "--config", metavar="TOML",
                        help="pipeline configuration file (default: the shipped "
                             "default_pipeline.toml; see --print-config)")
    parser.add_argument("-o", "--out", metavar="DIR", default="pipeline-run",
                        help="output directory for checkpoints, models and the report "
                             "(default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="use OUT even if it holds another configuration's run or other "
                             "files; stages whose inputs did not change are kept, and only what "
                             "the pipeline wrote (listed in OUT/manifest.json) is ever removed")
    parser.add_argument("--dataset", metavar="NAME_OR_NPZ",
                        help="override [run] dataset: mnist-5k (bundled), mnist-full or an .npz "
                             "with x_train, y_train, x_test, y_test")
    parser.add_argument("--data-root", metavar="DIR",
                        help="override [run] data_root: cache directory of the full MNIST files")
    parser.add_argument("--seed", type=int, help="override [run] seed")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="override [run] limit: train on a random subset of N images")
    parser.add_argument("--test-limit", type=int, metavar="N",
                        help="override [run] test_limit: evaluate on a random subset of N test images")
    parser.add_argument("--latency-repeats", type=int, metavar="N",
                        help="override [run] latency_repeats: timed runs per latency figure")
    parser.add_argument("--check", action="store_true",
                        help="validate the configuration, print the stages and exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print the default configuration (a starting point) and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def load(args: argparse.Namespace) -> tuple[dict, str]:
    """The validated configuration (file or default, with the command-line overrides) and its
    text. Raises ``ConfigError``."""
    if args.config is None:
        text, source = default_config_text(), "default_pipeline.toml"
    else:
        text, source = read_config_text(args.config), args.config
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, f"not valid TOML: {err}") from err
    overrides = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    if overrides:
        if not isinstance(raw.get("run", {}), dict):
            raise ConfigError("run", "must be a table")
        raw["run"] = {**raw.get("run", {}), **overrides}
        text += "\n# command-line overrides of [run]: " + ", ".join(
            f"{k} = {v!r}" for k, v in overrides.items()) + "\n"
    return validate(raw), text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_config:
        print(default_config_text(), end="")
        return 0
    try:
        config, text = load(args)
        if args.check:
            print(f"configuration OK: {len(config['stages'])} stages: "
                  + " -> ".join(f"{s['name']} ({s['type']})" for s in config["stages"]))
            return 0
        run_pipeline(config, args.out, config_text=text, force=args.force,
                     progress=False if args.no_progress else None)
    except (ConfigError, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk filled up, a file vanished or became unwritable mid-run
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
