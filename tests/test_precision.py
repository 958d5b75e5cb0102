"""models/precision.py: `precision: auto` decided from (faked) CPU flags and GPUs, and recorded by
training (hparams.json, train_report.json) and export (deeplab_export.json)."""

import json
import logging
import types

import pytest

from models import hparams as hparams_lib
from models import precision
from tests.helpers import TINY_TRAIN, export_random_model

AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # e.g. AMD Zen 2: bfloat16 only emulated


@pytest.mark.parametrize(
    "cpu_flags, gpus, policy, in_reason",
    [
        (AVX2, [], "float32", "neither amx_bf16 nor avx512_bf16"),
        (AVX2 | {"avx512f", "avx512_bf16"}, [], "mixed_bfloat16", "CPU has avx512_bf16 (native bfloat16)"),
        (AVX2 | {"amx_tile", "amx_bf16"}, [], "mixed_bfloat16", "CPU has amx_bf16"),
        (AVX2, [(8, 0)], "mixed_bfloat16", "compute capability 8.0 (native bfloat16)"),
        (AVX2, [{"device_name": "NVIDIA H100", "compute_capability": (9, 0)}], "mixed_bfloat16", "NVIDIA H100"),
        (AVX2, [(7, 0)], "mixed_float16", "compute capability 7.0"),
        (AVX2, ["7.5"], "mixed_float16", "compute capability 7.5"),
        (AVX2, [(6, 1)], "float32", "compute capability 6.1"),
        (AVX2 | {"avx512_bf16"}, [(7, 0)], "mixed_float16", "GPU"),  # the GPU runs the model, not the CPU
        (AVX2, [(8, 0), (7, 5)], "mixed_float16", "2 GPUs, the weakest"),  # every replica runs one policy
        (AVX2, [None], "float32", "unknown"),
    ],
)
def test_auto_follows_native_hardware(cpu_flags, gpus, policy, in_reason):
    got, reason = precision.resolve_precision("auto", cpu_flags=cpu_flags, gpus=gpus)
    assert got == policy
    assert reason.startswith("auto: ") and in_reason in reason


@pytest.mark.parametrize("requested", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_explicit_values_pass_through(requested):
    for cpu_flags, gpus in ((AVX2, []), (AVX2 | {"amx_bf16"}, []), (AVX2, [(7, 0)]), (AVX2, [(9, 0)])):
        assert precision.resolve_precision(requested, cpu_flags=cpu_flags, gpus=gpus) == (requested, "requested")


def test_explicit_bfloat16_without_native_support_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="models.precision"):
        assert precision.resolve_precision("mixed_bfloat16", cpu_flags=AVX2, gpus=[])[0] == "mixed_bfloat16"
    assert "emulated" in caplog.text and "slower" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.precision"):
        precision.resolve_precision("mixed_bfloat16", cpu_flags=AVX2 | {"avx512_bf16"}, gpus=[])
        precision.resolve_precision("float32", cpu_flags=AVX2, gpus=[])
    assert not caplog.records


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, float32, mixed_bfloat16, mixed_float16"):
        precision.resolve_precision("bf16", cpu_flags=AVX2, gpus=[])
    with pytest.raises(ValueError, match="export precision"):
        precision.resolve_export_precision("mixed_float16", cpu_flags=AVX2, gpus=[])


def test_cpu_flags_from_cpuinfo_and_absent_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx avx2 fma\n\n"
        "processor\t: 1\nflags\t\t: fpu avx avx2 fma\n"
    )
    assert precision.read_cpu_flags(str(cpuinfo)) == {"fpu", "avx", "avx2", "fma"}
    assert precision.read_cpu_flags(str(tmp_path / "absent")) is None  # not Linux
    # Default cpu_flags come from /proc/cpuinfo; where it is absent, auto is float32.
    monkeypatch.setattr(precision, "read_cpu_flags", lambda path="/proc/cpuinfo": None)
    policy, reason = precision.resolve_precision("auto", gpus=[])
    assert policy == "float32" and "CPU flags unknown" in reason


def test_default_gpus_come_from_tensorflow(monkeypatch):
    import tensorflow as tf

    fake = types.SimpleNamespace(name="/physical_device:GPU:0", device_type="GPU")
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [fake] if kind == "GPU" else [])
    monkeypatch.setattr(
        tf.config.experimental,
        "get_device_details",
        lambda device: {"device_name": "NVIDIA A100-SXM4-40GB", "compute_capability": (8, 0)},
    )
    assert precision.gpu_compute_capabilities() == [("NVIDIA A100-SXM4-40GB", (8, 0))]
    policy, reason = precision.resolve_precision("auto", cpu_flags=AVX2)
    assert policy == "mixed_bfloat16" and "NVIDIA A100-SXM4-40GB" in reason


def test_export_precision_is_bfloat16_only_where_native():
    resolve = precision.resolve_export_precision
    assert resolve("auto", cpu_flags=AVX2, gpus=[])[0] == "float32"
    assert resolve("auto", cpu_flags=AVX2 | {"avx512_bf16"}, gpus=[]) == (
        "bfloat16",
        "auto: CPU has avx512_bf16 (native bfloat16)",
    )
    assert resolve("auto", cpu_flags=AVX2, gpus=[(8, 6)])[0] == "bfloat16"
    assert resolve("auto", cpu_flags=AVX2, gpus=[(7, 5)])[0] == "float32"  # no float16 export graph
    assert resolve("bfloat16", cpu_flags=AVX2, gpus=[]) == ("bfloat16", "requested")
    assert resolve("float32", cpu_flags=AVX2 | {"amx_bf16"}, gpus=[]) == ("float32", "requested")


def test_hparams_default_to_auto_and_reload_with_recorded_choice(tmp_path):
    assert hparams_lib.HParams().precision == "auto"
    for name in hparams_lib.PRESETS:
        assert hparams_lib.preset(name).precision == "auto"
    with pytest.raises(ValueError, match="precision"):
        hparams_lib.HParams(precision="bfloat16")
    hp = hparams_lib.preset("demo")
    path = tmp_path / "hparams.json"
    hp.to_json(str(path), precision_resolved="float32", precision_reason="auto: test")
    assert json.loads(path.read_text())["precision_resolved"] == "float32"
    assert hparams_lib.HParams.from_json(str(path)) == hp
    with pytest.raises(ValueError, match="records only"):
        hp.to_json(precision_typo="x")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):  # only from_json drops recorded keys
        hparams_lib.HParams.from_dict({**hp.to_dict(), "precision_resolved": "float32"})


@pytest.fixture
def avx2_only(monkeypatch):
    """This machine seen as an AVX2-only CPU without GPU (e.g. AMD Zen 2)."""
    monkeypatch.setattr(precision, "read_cpu_flags", lambda path="/proc/cpuinfo": frozenset(AVX2))
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])


@pytest.fixture
def amx(monkeypatch):
    """This machine seen as an Intel CPU with AMX (native bfloat16), without GPU."""
    monkeypatch.setattr(
        precision, "read_cpu_flags", lambda path="/proc/cpuinfo": frozenset(AVX2 | {"avx512f", "amx_tile", "amx_bf16"})
    )
    monkeypatch.setattr(precision, "gpu_compute_capabilities", lambda: [])


def test_train_records_the_resolved_precision(avx2_only, tmp_path, caplog):
    from models import train as train_lib
    from tests.test_train_data import write_records

    write_records(tmp_path / "ex" / "Split-train" / "data_tfrecord-00000-of-00001.gz", 2, seed=1)
    write_records(tmp_path / "ex" / "Split-val" / "data_tfrecord-00000-of-00001.gz", 1, seed=2)
    tiny = {**TINY_TRAIN, "precision": "auto"}
    hp = hparams_lib.preset(
        "demo", **tiny, log_images=0, train_steps=1, steps_per_epoch=1, cache_decoded=False, shuffle_buffer=2
    )
    assert hp.precision == "auto"
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="models.train"):
        report = train_lib.train(
            hp,
            str(tmp_path / "ex" / "Split-train"),
            str(tmp_path / "ex" / "Split-val"),
            str(run_dir),
            verbose=0,
        )
    reason = "auto: no GPU; CPU has neither amx_bf16 nor avx512_bf16 (bfloat16 would be emulated and slower)"
    assert f"precision float32 ({reason})" in caplog.text
    from models import model_io

    recorded = json.loads((run_dir / model_io.HPARAMS_FILENAME).read_text())
    assert recorded["precision"] == "auto"  # what was asked: resolves again wherever it is retrained
    assert recorded["precision_resolved"] == "float32" and recorded["precision_reason"] == reason
    assert report["precision_resolved"] == "float32" and report["precision_reason"] == reason
    assert json.loads((run_dir / train_lib.REPORT_FILENAME).read_text())["precision_resolved"] == "float32"
    model, config, recorded_hparams, _ = model_io.load_model(str(run_dir))
    reloaded = hparams_lib.HParams.from_dict(
        {k: v for k, v in recorded_hparams.items() if k not in hparams_lib.RECORDED_KEYS}
    )
    assert reloaded == hp and config == hp.model and model.compute_dtype == "float32"


def test_deeplab_export_defaults_to_auto_and_records_why(amx, tmp_path):
    from models.export_files import read_export_config

    out = str(tmp_path / "auto")
    assert export_random_model(out) == 0
    config = read_export_config(out)
    assert config["precision"] == "bfloat16"
    assert config["precision_reason"] == "auto: CPU has amx_bf16 (native bfloat16)"
