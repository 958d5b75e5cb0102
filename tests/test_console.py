"""The quiet console (pipeline/console.py): stage lines, the project's warnings on the terminal, everything else
(C-level stderr included) in the log file, and the process restored afterwards."""

import argparse
import io
import logging
import os
import subprocess
import sys
import warnings

from pipeline import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(msg, *args, name="absl"):
    return logging.LogRecord(name, logging.INFO, __file__, 0, msg, args, None)


def test_stage_lines_name_each_finished_component_and_cached_ones():
    out = io.StringIO()
    stages = console.StageLines(out)
    for record in (
        _record("Component %s is running.", "VocExampleGen"),
        _record("Going to run a new execution %d", 1),
        _record("Component %s is finished.", "VocExampleGen"),
        _record("Component %s is running.", "StatisticsGen"),
        _record("A cached execution %d is used.", 2),
        _record("Component %s is finished.", "StatisticsGen"),
    ):
        stages.handle(record)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["VocExampleGen", "StatisticsGen"]
    assert lines[0].endswith(" s)") and lines[1].endswith("(cached)")


def test_log_path_is_under_the_run_folder_or_runs_logs(tmp_path):
    local = console.log_path_for("run", argparse.Namespace(output_dir=str(tmp_path)), now=0)
    assert os.path.dirname(local) == os.path.join(str(tmp_path), "logs") and "deeplab-run-" in local
    remote = console.log_path_for("evaluate", argparse.Namespace(output_dir="gs://b/eval"), now=0)
    assert os.path.dirname(remote) == console.FALLBACK_LOG_DIR


def test_every_command_logs_beside_its_output(tmp_path):
    """Inside the folder a command fills, beside what it creates (a SavedModel version folder, a file), never in
    the current folder (`deeplab export` once wrote ./runs/logs wherever it was run)."""
    out = str(tmp_path)
    cases = {
        ("synth", "output"): os.path.join(out, "ds"),
        ("predict", "out"): os.path.join(out, "preds"),
        ("export", "output"): os.path.join(out, "serving", "deeplab", "7"),
        ("compile", "output"): os.path.join(out, "pipeline.json"),
        ("schema", "out"): os.path.join(out, "proposed.pbtxt"),
        ("serve", "model_base_path"): os.path.join(out, "serving", "deeplab"),
        ("infer", "output"): os.path.join(out, "segmented"),
    }
    expected = {
        "synth": os.path.join(out, "ds", "logs"),
        "predict": os.path.join(out, "preds", "logs"),
        "export": os.path.join(out, "serving", "deeplab", "logs"),
        "compile": os.path.join(out, "logs"),
        "schema": os.path.join(out, "logs"),
        "serve": os.path.join(out, "serving", "logs"),
        "infer": os.path.join(out, "segmented", "logs"),
    }
    for (command, flag), value in cases.items():
        args = argparse.Namespace(**{flag: value})
        assert os.path.dirname(console.log_path_for(command, args)) == expected[command], command
    assert set(console.QUIET_COMMANDS) == set(__import__("runner").COMMANDS)  # every command has a log


def test_no_command_with_an_output_logs_into_the_current_folder(tmp_path):
    """Each command given its output flags (the README's values) logs under them, not in ./runs/logs."""
    import runner

    outputs = ("workdir", "output_dir", "output", "out", "model_base_path")
    for command in runner.COMMANDS:
        sub = runner.build_parser(command)._subparsers._group_actions[0].choices[command]
        flags = {a.dest for a in sub._actions} & set(outputs)
        if not flags:
            continue
        args = argparse.Namespace(**{flag: str(tmp_path / command / flag) for flag in flags})
        assert console.log_folder_for(command, args).startswith(str(tmp_path)), (command, sorted(flags))


def test_quiet_sends_noise_to_the_log_keeps_project_warnings_and_restores(tmp_path, capsys):
    args = argparse.Namespace(output_dir=str(tmp_path))
    handlers_before = list(logging.getLogger().handlers)
    with warnings.catch_warnings(), console.quiet("run", args) as path:
        warnings.simplefilter("always")
        os.write(2, b"E external/local_xla/cuda_plugin: Unable to register cuDNN factory\n")
        logging.getLogger("tensorflow").warning("AutoGraph could not transform <function>")
        logging.getLogger("absl").info("Component %s is running.", "Trainer")
        logging.getLogger("absl").info("Component %s is finished.", "Trainer")
        logging.getLogger("components.voc_example_gen.executor").warning("3 masks had labels outside 0..20")
        logging.getLogger("models.train").info("Training mobilenet_v2 for 750 steps")
        warnings.warn("Python 3.11 support ends", FutureWarning)
        print("summary line")
    captured = capsys.readouterr()
    terminal = captured.out + captured.err
    assert f"log: {path}" in terminal and "summary line" in terminal
    assert "Trainer" in terminal and "done (" in terminal
    assert "3 masks had labels outside 0..20" in terminal  # about the user's data: visible
    for noise in ("cuDNN", "AutoGraph", "FutureWarning", "Training mobilenet_v2", "is running"):
        assert noise not in terminal, noise
    log = open(path).read()
    for line in ("cuDNN", "AutoGraph", "FutureWarning", "Training mobilenet_v2", "3 masks had labels"):
        assert line in log, line
    assert logging.getLogger().handlers == handlers_before
    os.fstat(2)  # fd 2 is open again and is not the log file
    assert os.fstat(2).st_ino != os.stat(path).st_ino


def test_a_failing_command_prints_one_line_and_logs_the_traceback(tmp_path):
    """`deeplab evaluate` on a model folder that does not exist: exit 1, one FAILED line naming the log."""
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "runner.py"),
            "evaluate",
            "--model",
            str(tmp_path / "no_model"),
            "--examples",
            str(tmp_path / "none*.gz"),
            "--output-dir",
            str(tmp_path / "eval"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    terminal = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0
    assert terminal[0].startswith("log: ")
    assert len(terminal) <= 4, terminal
    assert "Traceback" not in result.stderr
    log_path = terminal[0].split()[1]
    assert os.path.isfile(log_path)


def test_stage_lines_survive_absl_raising_its_level(tmp_path, capsys):
    """absl sets its logger to WARNING when its flags are parsed (a library did so mid-run, after the Trainer):
    the quiet console keeps receiving LocalDagRunner's INFO stage records, and restores the level afterwards."""
    absl_logger = logging.getLogger("absl")
    before = absl_logger.level
    with console.quiet("run", argparse.Namespace(output_dir=str(tmp_path))):
        absl_logger.setLevel(logging.WARNING)
        absl_logger.info("Component %s is running.", "AtomicPusher")
        absl_logger.info("Component %s is finished.", "AtomicPusher")
    assert "AtomicPusher" in capsys.readouterr().out
    assert absl_logger.level == before
