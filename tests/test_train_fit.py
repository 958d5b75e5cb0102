"""The fit loop: resume after an interrupted fit, TFX run_fn artifacts, `deeplab train`, distribution."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tf_keras as keras

from models import hparams as hparams_lib
from models import model_io
from models import train as train_lib
from tests.helpers import TINY_TRAIN
from tests.test_train_data import write_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(TINY_TRAIN, log_images=1, cache_decoded=False, shuffle_buffer=4)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    write_records(root / "Split-train" / "data_tfrecord-00000-of-00001.gz", 6, seed=1)
    write_records(root / "Split-val" / "data_tfrecord-00000-of-00001.gz", 2, seed=2)
    return root


def _tiny(**overrides):
    return hparams_lib.preset("demo", **{**TINY, **overrides})


class _Interrupt(keras.callbacks.Callback):
    """Simulates a killed Trainer: raises once the optimizer has done `at_step` steps."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.at_step:
            raise KeyboardInterrupt(f"simulated kill at step {self.at_step}")


@pytest.mark.parametrize("network", [{}, {"decoder": "v3plus", "class_weights": "auto"}], ids=["v3", "v3plus"])
def test_killed_trainer_resumes_from_last_checkpoint_and_writes_artifacts(examples, tmp_path, network):
    """One test for both (each training costs ~30 s of graph tracing on this CPU): a fit killed at step 4
    of 6, then the TFX run_fn on the same model_run_dir continues from step 4 and writes everything. Also with
    the DeepLabV3+ decoder and class weights."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from models.trainer_module import run_fn

    run_dir = tmp_path / "model_run"
    config = {"preset": "demo", **TINY, "steps_per_epoch": 3, "checkpoint_every": 2, **network}
    hp = hparams_lib.from_custom_config(config, train_steps=6)
    with pytest.raises(KeyboardInterrupt):
        train_lib.train(
            hp,
            str(examples / "Split-train"),
            str(examples / "Split-val"),
            str(run_dir),
            callbacks=[_Interrupt(4)],
            verbose=0,
        )
    assert not (run_dir / model_io.MODEL_FILENAME).exists()
    assert (run_dir / "backup").is_dir()

    fn_args = FnArgs(
        train_files=[str(examples / "Split-train" / "*")],
        eval_files=[str(examples / "Split-val" / "*")],
        train_steps=6,
        eval_steps=None,
        model_run_dir=str(run_dir),
        serving_model_dir=str(tmp_path / "model" / "Format-Serving"),
        custom_config={**config, "serving_tta": {"scales": [0.75, 1.0], "flip": True}},
    )
    report = run_fn(fn_args)
    assert report["steps"] == 6
    # Resumed inside epoch 2 at step 4: only epoch 2 ran (starting over would log 2 epochs and 6 more steps).
    assert len(report["history"]["loss"]) == 1
    assert 0.0 <= report["val_miou"] <= 1.0 and report["val_images"] == 2
    recorded = json.loads((run_dir / "hparams.json").read_text())
    assert recorded["crop_size"] == 33 and recorded["model"]["decoder"] == network.get("decoder", "v3")
    assert recorded["atrous_impl_resolved"] in ("taps", "stock") and recorded["atrous_impl_reason"]
    assert json.loads((run_dir / "train_report.json").read_text())["steps"] == 6
    assert (run_dir / "predictions" / "epoch_002.png").is_file()
    event_dirs = {
        os.path.basename(d) for d, _, files in os.walk(run_dir) if any(f.startswith("events.out") for f in files)
    }
    assert {"train", "validation", "validation_images"} <= event_dirs
    assert (tmp_path / "model" / "Format-Serving" / "saved_model.pb").is_file()
    # The pipeline's serving_tta is what the export serves (and what the evaluator's "export" mode measures).
    from components.miou_evaluator.evaluate import resolve_tta
    from models.export_files import read_export_config

    assert read_export_config(str(tmp_path / "model" / "Format-Serving"))["tta"]["scales"] == [0.75, 1.0]
    tta = resolve_tta("export", str(tmp_path / "model" / "Format-Serving"))
    assert tta.scales == (0.75, 1.0) and tta.flip
    assert report["initial_step"] == 4
    loaded = model_io.load_model(str(run_dir))
    assert loaded.hparams["crop_size"] == 33 and loaded.model.output_shape[-1] == 21 == loaded.config.num_classes
    assert loaded.config.decoder == network.get("decoder", "v3")


def test_poly_schedule_and_warmup():
    schedule = train_lib.PolyDecay(0.01, 100, power=0.9, warmup_steps=10)
    assert float(schedule(0)) == pytest.approx(0.001 * (1 - 0 / 100) ** 0.9)
    assert float(schedule(50)) == pytest.approx(0.01 * 0.5**0.9)
    assert float(schedule(100)) == 0.0
    assert train_lib.PolyDecay.from_config(schedule.get_config()).get_config() == schedule.get_config()


_TRAIN_SNIPPET = """
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    {setup}
    from models import hparams, train
    hp = hparams.preset("demo", alpha=0.35, aspp_filters=8, crop_size=33, batch_size=4, precision="float32",
                        log_images=0, train_steps=2, steps_per_epoch=2, cache_decoded=False, shuffle_buffer=4)
    report = train.train(hp, sys.argv[1] + "/Split-train", sys.argv[1] + "/Split-val", sys.argv[2],
                         strategy={strategy}, verbose=0)
    print("RESULT " + json.dumps({{"replicas": report["replicas"], "loss": report["history"]["loss"],
                                  "steps": report["steps"], "model": report["model"]}}))
"""


@pytest.mark.slow  # a fresh process and a full graph trace: ~90 s on the shared 2-core CPU
def test_mirrored_strategy_on_two_logical_cpus(examples, tmp_path):
    code = _TRAIN_SNIPPET.format(
        setup="cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)",
        strategy="train.get_strategy(devices=['/cpu:0', '/cpu:1'])",
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), str(examples), str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stderr[-3000:]
    out = json.loads(lines[-1][7:])
    assert out["replicas"] == 2 and out["steps"] == 2 and np.isfinite(out["loss"]).all()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_two_local_workers(examples, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    code = textwrap.dedent(_TRAIN_SNIPPET.format(setup="", strategy="None"))
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(examples), str(tmp_path / "run")],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=400)
            outputs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = []
    for code_, stdout, stderr in outputs:
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert code_ == 0 and lines, stderr[-3000:]
        results.append(json.loads(lines[-1][7:]))
    assert [r["replicas"] for r in results] == [2, 2]
    assert results[0]["loss"] == results[1]["loss"]  # one synchronous model
    assert results[0]["model"] and os.path.exists(results[0]["model"])  # chief (worker 0) saves the model
    assert results[1]["model"] is None


def test_deeplab_train_cli_names_missing_split(tmp_path):
    bad = subprocess.run(
        [sys.executable, "runner.py", "train", "--examples", str(tmp_path), "--output-dir", str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "has no Split-* folders" in bad.stderr and "ExampleGen" in bad.stderr


@pytest.mark.slow  # trains in a subprocess
def test_deeplab_train_cli(examples, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "runner.py",
            "train",
            "--examples",
            str(examples),
            "--output-dir",
            str(out),
            "--preset",
            "demo",
            "--alpha",
            "0.35",
            "--aspp-filters",
            "8",
            "--crop-size",
            "33",
            "--batch-size",
            "2",
            "--train-steps",
            "2",
            "--steps-per-epoch",
            "2",
            "--precision",
            "float32",
            "--log-images",
            "0",
            "--no-export",
            "--progress",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation mIoU:" in result.stdout
    assert (out / "model_run" / "model.keras").is_file()


def test_autograph_converts_our_layers_but_not_tf_keras_internals(monkeypatch):
    """models/__init__ adds DoNotConvert('tf_keras'): without it, tracing Model.fit's step converted ~16,800
    functions of Keras' own code for the demo model (~20 s before the first step)."""
    import collections

    import tensorflow as tf
    from tensorflow.python.autograph.impl import api

    from models.layers import ConvBNReLU

    converted = collections.Counter()
    convert = api._convert_actual

    def counting(entity, program_ctx):
        converted[f"{getattr(entity, '__module__', '')}.{getattr(entity, '__qualname__', '')}"] += 1
        return convert(entity, program_ctx)

    monkeypatch.setattr(api, "_convert_actual", counting)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(ConvBNReLU(4, 3, dilation_rate=2)(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    data = tf.data.Dataset.from_tensors((np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 2), np.float32)))
    model.fit(data, epochs=1, verbose=0)
    assert "models.layers.ConvBNReLU.call" in converted  # our code still gets AutoGraph
    keras_internals = [name for name in converted if name.startswith("tf_keras.") and "<locals>" not in name]
    assert keras_internals == []
    assert sum(converted.values()) < 50, converted.most_common(10)
