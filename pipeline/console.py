"""What long commands print: one line per pipeline stage, progress bars (Keras, tqdm), the summary, and warnings
about the user's data or settings. Everything else (TensorFlow's C++ log, Beam workers, TFX's protobuf dumps,
library warnings) goes to a log file whose path is printed first; `--verbose` prints it all to the terminal.

The log file takes file descriptor 2 itself, so output of C++ code and of Beam worker subprocesses lands there
too; Python's `sys.stderr` stays on the terminal for the project's own warnings and errors.
"""

import contextlib
import io
import logging
import os
import sys
import time

# Commands that are quiet by default (runner.py adds --verbose to them): all of them.
QUIET_COMMANDS = (
    "synth",
    "ingest",
    "run",
    "compile",
    "schema",
    "demo",
    "train",
    "evaluate",
    "export",
    "serve",
    "predict",
    "infer",
)
# Loggers whose warnings are about the user's data or settings, so they stay on the terminal.
PROJECT_LOGGERS = ("data", "models", "components", "pipeline", "serving", "runner", "__main__")
LOG_DIRNAME = "logs"
FALLBACK_LOG_DIR = os.path.join("runs", LOG_DIRNAME)
BEAM_RELAY_LOGGERS = (
    "apache_beam.runners.portability.local_job_service",
    "apache_beam.runners.worker",
    "apache_beam.runners.portability.fn_api_runner",
)
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The LocalDagRunner / Launcher messages that frame each component (format strings, matched exactly).
_STAGE_RUNNING = "Component %s is running."
_STAGE_FINISHED = "Component %s is finished."
_STAGE_CACHED = "A cached execution %d is used."


# Where a command's log goes when it has no --workdir / --output-dir: (flag attribute, where). "inside": the
# folder the command fills; "beside": next to the file or new folder it creates (a SavedModel version folder
# must hold nothing else; the serving base path only numeric versions are read from).
LOG_FOLDER_OF = {
    "synth": ("output", "inside"),
    "predict": ("out", "inside"),
    "infer": ("output", "inside"),
    "export": ("output", "beside"),
    "compile": ("output", "beside"),
    "schema": ("out", "beside"),
    "serve": ("model_base_path", "beside"),
}
# Commands whose stdout is read by scripts: their `log:` line goes to stderr (serve's first stdout line is JSON).
LOG_LINE_ON_STDERR = ("serve",)


def log_folder_for(command, args):
    """The folder of a command's log: `<workdir|output-dir>/logs`, else beside or inside its output (LOG_FOLDER_OF),
    else runs/logs (also for a gs:// output, which cannot take an appended log)."""
    folder = getattr(args, "workdir", None) or getattr(args, "output_dir", None)
    if not folder and command in LOG_FOLDER_OF:
        attribute, where = LOG_FOLDER_OF[command]
        path = getattr(args, attribute, None)
        if path:
            folder = path if where == "inside" else os.path.dirname(os.path.abspath(str(path).rstrip("/")))
    if folder and "://" not in str(folder):
        return os.path.join(folder, LOG_DIRNAME)
    return FALLBACK_LOG_DIR


def log_path_for(command, args, now=None):
    """`<log folder>/deeplab-<command>-<time>.log` (see log_folder_for)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return os.path.join(log_folder_for(command, args), f"deeplab-{command}-{stamp}.log")


class _ProjectWarnings(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING and record.name.split(".")[0] in PROJECT_LOGGERS


class StageLines(logging.Handler):
    """Prints one line per finished pipeline component: name, seconds, and whether TFX reused a cached result."""

    def __init__(self, out):
        super().__init__(logging.INFO)
        self.out = out
        self._started = {}
        self._cached = set()
        self.finished = []

    def emit(self, record):
        if record.msg == _STAGE_RUNNING and record.args:
            self._started[record.args[0]] = record.created
            self._current = record.args[0]
        elif record.msg == _STAGE_CACHED:
            self._cached.add(getattr(self, "_current", None))
        elif record.msg == _STAGE_FINISHED and record.args:
            node = record.args[0]
            seconds = record.created - self._started.get(node, record.created)
            how = "cached" if node in self._cached else f"{seconds:.0f} s"
            self.finished.append(node)
            print(f"    {node:<32} done ({how})", file=self.out, flush=True)


@contextlib.contextmanager
def quiet(command, args):
    """Inside the block everything but the console's own lines goes to a log file (its path is yielded); the
    process's stderr, logging and warnings are restored afterwards (tests call runner.main in-process)."""
    path = log_path_for(command, args)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root = logging.getLogger()
    saved = (sys.stderr, list(root.handlers), root.level, os.dup(2))
    log_file = open(path, "a", buffering=1)
    try:  # under pytest's capsys stderr is no file: it keeps capturing the console lines
        own_terminal = sys.stderr.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        own_terminal = False
    terminal = os.fdopen(os.dup(2), "w", buffering=1) if own_terminal else sys.stderr
    sys.stderr.flush()
    os.dup2(log_file.fileno(), 2)
    sys.stderr = terminal
    # Python's own warnings (FutureWarnings of every imported library) become log records: file only.
    logging.captureWarnings(True)
    for handler in saved[1]:
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    to_terminal.addFilter(_ProjectWarnings())
    added = [to_file, to_terminal, StageLines(sys.stdout)]
    for handler in added:
        root.addHandler(handler)
    # The stage lines are absl INFO records. Parsing absl's flags (done by some library mid-run, after the
    # Trainer's export) sets the absl logger to WARNING, which would drop every later stage line: hold it at INFO.
    absl_logger = logging.getLogger("absl")
    absl_level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    absl_logger.setLevel = lambda level: None
    print(
        f"log: {path} (--verbose prints it here instead)",
        file=terminal if command in LOG_LINE_ON_STDERR else sys.stdout,
        flush=True,
    )
    try:
        yield path
    finally:
        del absl_logger.setLevel
        absl_logger.setLevel(absl_level)
        for handler in added:
            root.removeHandler(handler)
        for handler in saved[1]:
            root.addHandler(handler)
        root.setLevel(saved[2])
        logging.captureWarnings(False)
        terminal.flush()
        sys.stderr = saved[0]
        os.dup2(saved[3], 2)
        os.close(saved[3])
        if own_terminal:
            terminal.close()
        log_file.close()


def verbose(log_level="INFO"):
    """Everything on the terminal (the behaviour of --verbose and of the short commands)."""
    logging.basicConfig(level=log_level.upper(), format=FILE_FORMAT)
    # The local Beam job service relays every worker's INFO line (harness start-up, channels): noise that buries
    # the pipeline's own progress. Beam counters and component logs stay at INFO.
    for name in BEAM_RELAY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
