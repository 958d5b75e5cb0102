"""The one CLI of deeplab-tfx: `deeplab COMMAND ...` (console script) or `python runner.py COMMAND ...`.

Each command's arguments and body live beside the code they drive, in a module exposing
`add_arguments(command, parser)` and `main(command, args) -> int`. Only the chosen command's module is
imported, and building its parser imports no TensorFlow (its heavy imports are inside its main), so `--help`
is instant and the console (pipeline/console.py) takes over the terminal before anything can print
TensorFlow's start-up lines: the first line a command prints is its `log: ...` line.
"""

import argparse
import importlib
import logging
import os
import sys

from pipeline import console  # importing a project package sets TF_USE_LEGACY_KERAS (data/__init__.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# google-api-core warns in every Beam worker process that Python 3.11 support ends in 2027: inherited
# by the workers, this keeps one line per process out of the log.
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

# module that implements the commands -> {command: one-line help}; `deeplab --help` lists them in this order.
_COMMANDS_BY_MODULE = {
    "data.cli": {"synth": "write a synthetic VOCdevkit dataset"},
    "pipeline.cli": {
        "ingest": "run the data half of the pipeline and write ingest_report.json",
        "run": "run the whole pipeline locally (LocalDagRunner, sqlite MLMD, caching)",
        "compile": "compile the pipeline for Kubeflow (KubeflowV2DagRunner)",
        "infer": "segment a folder, glob or bucket of images with an export (Beam RunInference)",
    },
    "pipeline.schema_cli": {"schema": "regenerate the curated data schema from a run's statistics (shows a diff)"},
    "pipeline.demo": {"demo": "synthetic data -> pipeline -> summary, pictures and a served prediction"},
    "models.cli": {"train": "train DeepLab V3 outside TFX on ExampleGen TFRecords"},
    "components.miou_evaluator.cli": {"evaluate": "evaluate an exported model: mIoU report"},
    "serving.cli": {
        "export": "re-export a trained model for TF Serving",
        "serve": "local TF Serving-compatible gRPC/REST endpoint",
        "predict": "send images to a TF Serving endpoint, write label maps and overlays",
    },
}
# command -> (module that implements it, one-line help)
COMMANDS = {name: (module, text) for module, texts in _COMMANDS_BY_MODULE.items() for name, text in texts.items()}


def build_parser(command=None):
    parser = argparse.ArgumentParser(prog="deeplab", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            if name in console.QUIET_COMMANDS:
                p.add_argument(
                    "--verbose",
                    action="store_true",
                    help="print every log line (TensorFlow, Beam, TFX) here instead of only stages, "
                    "progress and the summary, with the rest in a log file",
                )
            importlib.import_module(module).add_arguments(name, p)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    if args.command not in console.QUIET_COMMANDS or args.verbose:
        console.verbose(args.log_level)
        return importlib.import_module(COMMANDS[args.command][0]).main(args.command, args) or 0
    # Everything that imports TensorFlow, Beam or TFX happens inside: their start-up lines go to the log.
    with console.quiet(args.command, args) as log_path:
        try:
            return importlib.import_module(COMMANDS[args.command][0]).main(args.command, args) or 0
        except Exception as e:  # pylint: disable=broad-except  # the traceback goes to the log, one line here
            logging.getLogger("deeplab.failure").exception("deeplab %s failed", args.command)
            message = " ".join(str(e).split()) or type(e).__name__
            print(
                f"deeplab {args.command} FAILED: {type(e).__name__}: {message} (traceback: {log_path})",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":
    sys.exit(main())
