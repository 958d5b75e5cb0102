"""A killed `deeplab run` resumes its training when run again (issue 9): the real CLI in a subprocess, SIGKILLed
once the Trainer's first checkpoint exists under the pipeline root, then the same command again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from data import synthetic
from pipeline import configs
from tests.helpers import TINY_TRAIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_STEPS = 120
CHECKPOINT_EVERY = 10


def _command(voc_root, out, train_steps=TRAIN_STEPS, extra=()):
    sets = dict(
        TINY_TRAIN,
        log_images=0,
        cache_decoded=True,
        shuffle_buffer=4,
        steps_per_epoch=40,
        checkpoint_every=CHECKPOINT_EVERY,
    )
    return (
        [
            sys.executable,
            os.path.join(REPO, "runner.py"),
            "run",
            "--voc-root",
            str(voc_root),
            "--output-dir",
            str(out),
            "--preset",
            "demo",
            "--train-steps",
            str(train_steps),
            "--miou-threshold",
            "0",
            "--beam-arg=--direct_running_mode=in_memory",
            "--beam-arg=--direct_num_workers=1",
        ]
        + [f"--set={k}={json.dumps(v)}" for k, v in sets.items()]
        + list(extra)
    )


def _checkpoints(state_root):
    """Checkpoint index files of BackupAndRestore under the training-state folder."""
    found = []
    for folder, _, files in os.walk(state_root):
        found += [os.path.join(folder, f) for f in files if f.endswith(".index")]
    return found


def _train_report(out):
    with open(os.path.join(out, "ingest_report.json")) as f:
        return json.load(f)["model"]["train"]


@pytest.mark.slow  # four minutes and more: two real pipeline runs in fresh processes (make test-slow)
@pytest.mark.timeout(900)
def test_killed_run_resumes_training_from_its_checkpoint(tmp_path):
    voc_root = synthetic.generate_voc_dataset(
        tmp_path / "data", num_train=6, num_val=2, seed=3, min_size=40, max_size=56
    )
    out = tmp_path / "out"
    state_root = out / configs.PIPELINE_ROOT_DIRNAME / configs.TRAINING_STATE_DIRNAME
    log_path = tmp_path / "first.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "w") as log:
        first = subprocess.Popen(_command(voc_root, out), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 600
        while not _checkpoints(state_root) and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _checkpoints(state_root), (
        "no checkpoint appeared before the first run ended:\n" + log_path.read_text()[-3000:]
    )
    assert not os.path.exists(out / "ingest_report.json")  # killed before it finished

    second = subprocess.run(_command(voc_root, out), cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    report = _train_report(out)
    assert report["steps"] == TRAIN_STEPS
    assert report["initial_step"] >= CHECKPOINT_EVERY and report["initial_step"] % CHECKPOINT_EVERY == 0
    log_path = second.stdout.splitlines()[0].split()[1]  # the quiet console's first line names its log file
    with open(log_path) as f:
        assert f"resuming from step {report['initial_step']}" in f.read()
    # The finished training's state is gone: nothing is left to resume by mistake.
    assert not _checkpoints(state_root)


def test_a_changed_configuration_gets_its_own_state_and_says_so(tmp_path, caplog):
    from models import hparams as hparams_lib
    from models import trainer_module

    hp = hparams_lib.preset("demo")
    same = trainer_module.resume_identity(hp, ["/ex/1/Split-train/*"], ["/ex/1/Split-val/*"])
    with caplog.at_level("INFO"):
        first = trainer_module._prepare_resume_dir(str(tmp_path), same)
        assert "starting from step 0" in caplog.text
        caplog.clear()
        assert trainer_module._prepare_resume_dir(str(tmp_path), same) == first
        assert "resuming from its last checkpoint" in caplog.text
        caplog.clear()
        for changed in (
            trainer_module.resume_identity(
                hp.replace(learning_rate=0.01), ["/ex/1/Split-train/*"], ["/ex/1/Split-val/*"]
            ),
            trainer_module.resume_identity(hp, ["/ex/2/Split-train/*"], ["/ex/2/Split-val/*"]),
            trainer_module.resume_identity(
                hp, ["/ex/1/Split-train/*"], ["/ex/1/Split-val/*"], serving_tta={"scales": [1.0], "flip": True}
            ),
        ):
            assert trainer_module._prepare_resume_dir(str(tmp_path), changed) != first
            assert "configuration or the data changed" in caplog.text and "starting afresh from step 0" in caplog.text
            caplog.clear()
