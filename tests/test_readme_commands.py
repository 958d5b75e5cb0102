"""Walks the README: every command of its ```bash blocks either runs here, as written, in a subprocess from a
fresh working folder (exit 0, no traceback, its `log:` line first, and the outputs the README promises), or is
listed in SKIPPED with the reason. A README command that is neither fails the test.

The cheap commands (synth, compile) run in the default suite; the ones that need the demo's outputs run in the
slow part, after a small `deeplab demo` (the code `make demo` runs) in the same folder.
"""

import json
import os
import pathlib
import re
import shlex
import socket
import subprocess
import sys
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV = pathlib.Path(sys.prefix)  # the venv running the tests: `.venv/bin/deeplab` of the README resolves to it

# README command (its start) -> why the test does not run it.
SKIPPED = {
    "make demo": "the full demo takes 3.5-5 minutes; the slow part runs `deeplab demo` (what `make demo` runs) on a "
    "smaller dataset, and tests/test_pipeline_full.py the same pipeline",
    "make test": "the test suite itself",
    "make image": "needs Docker",
    "docker push": "needs Docker and a registry",
    ".venv/bin/deeplab ingest --voc-root /data/VOCdevkit": "needs the full VOC 2012 and SBD under /data",
    ".venv/bin/deeplab run --layout generic --data-root /data/street": "needs a dataset of your own under /data/street",
    ".venv/bin/deeplab run --voc-root /data/VOCdevkit": "needs VOC 2012, SBD and the ImageNet weights (preset paper)",
    ".venv/bin/deeplab train --examples runs/voc/": "needs the ingested full VOC (runs/voc) and the ImageNet weights",
    ".venv/bin/deeplab evaluate --model runs/demo/serving/deeplab --voc-root /data/VOCdevkit": "needs the full VOC "
    "2012 (the same command on the demo's data runs in the slow part)",
    ".venv/bin/deeplab demo --workdir runs/demo_stats": "a second whole demo (3.5-5 minutes); tests/test_transform.py "
    "trains and exports with normalization: dataset and class-balanced sampling",
    ".venv/bin/deeplab demo --workdir runs/demo_v3plus": "a second whole demo (3.5-5 minutes); the v3plus network "
    "trains, resumes and exports in tests/test_train_fit.py and tests/test_export.py",
    ".venv/bin/deeplab export --format tflite": "the int8 conversion at 513x513 takes 4-7 minutes on 2 cores "
    "(bench/RESULTS.md rows 52 and 58); tests/test_tflite_export.py runs the same CLI on a small model (slow part)",
}


def _files(*paths):
    def check(cwd, result):
        for path in paths:
            assert (cwd / path).exists(), f"{path} missing"

    return check


def _synth(cwd, result):
    _files("runs/synth/synth_summary.json", "runs/synth/synth_preview.png", "runs/synth/logs")(cwd, result)
    assert len(os.listdir(cwd / "runs/synth/VOC2012/JPEGImages")) == 12
    assert len(os.listdir(cwd / "runs/synth/sbd/dataset/img")) == 12  # --sbd: the SBD tree besides the VOC tree


def _compile(cwd, result):
    tasks = json.loads((cwd / "pipeline.json").read_text())["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"VocExampleGen", "Trainer", "MiouEvaluator", "AtomicPusher"} <= set(tasks)
    assert result.stdout.splitlines()[1].startswith(f"wrote {cwd / 'pipeline.json'}")
    assert len(result.stdout.splitlines()) == 2 and result.stderr == ""  # only its result line


def _ingest(cwd, result):
    report = json.loads((cwd / "runs/ingest/ingest_report.json").read_text())
    assert report["status"] == "ok" and set(report["splits"]) == {"train", "val"}


def _schema(cwd, result):
    assert "no change to" in result.stderr and result.stdout.splitlines()[1:] == []


def _train(cwd, result):
    _files("runs/exp1/model_run/train_report.json", "runs/exp1/serving_model/saved_model.pb")(cwd, result)
    assert "validation mIoU:" in result.stdout and "using the latest Examples artifact" in result.stdout


def _evaluate(cwd, result):
    evaluation = json.loads((cwd / "runs/eval/evaluation.json").read_text())
    assert evaluation["tta"]["scales"] == [0.75, 1.0, 1.25] and evaluation["tta"]["flip"]
    _files("runs/eval/index.html")(cwd, result)


def _predict(api, out):
    def check(cwd, result):
        report = json.loads((cwd / out / "predictions.json").read_text())
        assert report["api"] == api and len(report["images"]) == 1
        assert "WxH" in result.stdout

    return check


# README command (its start) -> (part, check of its outputs). "serve" runs in the background until "kill %1".
RUN = {
    ".venv/bin/deeplab synth --output runs/synth": ("fast", _synth),
    ".venv/bin/deeplab compile --target kubeflow": ("fast", _compile),
    ".venv/bin/deeplab ingest --voc-root runs/synth/VOC2012": ("slow", _ingest),
    ".venv/bin/deeplab schema --output-dir runs/ingest": ("slow", _schema),
    ".venv/bin/deeplab train --examples runs/demo/": ("slow", _train),
    ".venv/bin/deeplab evaluate --model runs/demo/serving/deeplab --voc-root runs/demo/": ("slow", _evaluate),
    ".venv/bin/deeplab export --model runs/demo/pipeline_root/Trainer/model": (
        "slow",
        _files("runs/export/1/saved_model.pb", "runs/export/logs"),
    ),
    ".venv/bin/deeplab serve --model-base-path runs/demo/serving/deeplab": ("slow", None),
    ".venv/bin/deeplab predict --server localhost:8500": ("slow", _predict("grpc", "runs/preds")),
    ".venv/bin/deeplab predict --rest --server localhost:8501": ("slow", _predict("rest", "runs/preds_rest")),
    "kill %1": ("slow", None),
    ".venv/bin/deeplab infer --model runs/demo/serving/deeplab": (
        "slow",
        _files("runs/segmented/index.jsonl", "runs/segmented/labels", "runs/segmented/overlays"),
    ),
}


def readme_commands(text=None):
    """The commands of the README's ```bash blocks, continuation lines joined and comments dropped."""
    text = (REPO / "README.md").read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def _entry(table, command):
    return next((key for key in table if command.startswith(key)), None)


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 15
    unlisted = [c for c in commands if _entry(RUN, c) is None and _entry(SKIPPED, c) is None]
    assert unlisted == [], "README commands neither run by this test nor listed in SKIPPED with a reason"
    both = [c for c in commands if _entry(RUN, c) and _entry(SKIPPED, c)]
    assert both == []
    for key in list(RUN) + list(SKIPPED):  # no stale entries
        assert any(c.startswith(key) for c in commands), f"{key!r} is no longer in the README"


def _fresh_clone(path):
    """A working folder where the README's relative paths (.venv/bin/deeplab, runs/...) resolve as in a clone."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".venv").exists():
        (path / ".venv").symlink_to(VENV)
    return path


def _run(cwd, command, timeout=900):
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    if command.startswith(".venv/bin/deeplab"):  # the silent start: the log line comes first
        assert result.stdout.splitlines()[0].startswith("log: "), result.stdout[:500]
    return result


def _walk(cwd, parts):
    ran = []
    server = None
    try:
        for command in readme_commands():
            key = _entry(RUN, command)
            if key is None or RUN[key][0] not in parts:
                continue
            if command.startswith("kill %1"):
                server.terminate()
                server.wait(timeout=60)
                server = None
            elif command.endswith("&"):
                server = _start_in_background(cwd, command[:-1].strip())
            else:
                RUN[key][1](cwd, _run(cwd, command))
            ran.append(key)
    finally:
        if server is not None:
            server.kill()
            server.wait()
    return ran


def _start_in_background(cwd, command):
    """`command &` of the README: started, and ready once it prints its JSON ports line."""
    server = subprocess.Popen(
        ["bash", "-c", "exec " + command], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ports = {}

    def read():
        for line in server.stdout:
            if line.startswith("{"):
                ports.update(json.loads(line))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=300)
    assert ports == {"grpc_port": 8500, "rest_port": 8501}, f"{command} did not come up: {ports}"
    return server


def test_cheap_readme_commands_run_as_written(tmp_path):
    ran = _walk(_fresh_clone(tmp_path / "clone"), ("fast",))
    assert sorted(ran) == sorted(k for k, (part, _) in RUN.items() if part == "fast")


def _port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a small demo, then ingest, train, evaluate, export, serve: ~25 min on 2 busy cores
def test_readme_commands_on_the_demo_outputs_run_as_written(tmp_path, in_process_beam):
    if not (_port_free(8500) and _port_free(8501)):
        pytest.skip("the README's serve and predict lines need ports 8500 and 8501, in use on this machine")
    cwd = _fresh_clone(tmp_path / "clone")
    # What `make demo` runs, on fewer images and a model that trains in seconds; pushed whatever its mIoU.
    tiny = "--set crop_size=33 --set batch_size=2 --set steps_per_epoch=2 --set aspp_filters=8 --set precision=float32"
    _run(
        cwd,
        ".venv/bin/deeplab demo --workdir runs/demo --num-train 6 --num-val 3 --train-steps 4 --miou-threshold 0 "
        + tiny
        + " "
        + " ".join(shlex.quote(a) for a in in_process_beam),
    )
    ran = _walk(cwd, ("fast", "slow"))  # in the README's order: ingest reads what synth wrote
    assert sorted(ran) == sorted(RUN)
    assert not (cwd / "runs/logs").exists()  # every log landed beside its command's output
