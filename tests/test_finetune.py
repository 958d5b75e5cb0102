"""Fine-tuning from a trained model (issue 11): models.finetune.warm_start copies the backbone and ASPP of any
saved form (model_run dir, export / Trainer Model artifact), re-initialises the logits of another class count,
refuses another backbone; HParams.init_from parses and round-trips; train() starts from the source weights and
records it; the Trainer's base_model fills init_from."""

import argparse
import json

import numpy as np
import pytest
import tf_keras as keras

from models import finetune, model_io
from models import hparams as hparams_lib
from models import train as train_lib
from tests.helpers import TINY_TRAIN
from tests.test_train_data import write_records

SOURCE = dict(backbone="mobilenet_v2", alpha=0.1, aspp_filters=8, num_classes=21, weights=None, precision="float32")


def _save_source(run_dir, **overrides):
    """A model_run dir (model.keras + hparams.json) of a tiny trained-looking model (random non-degenerate
    weights); returns (its HParams, the model)."""
    hp = hparams_lib.preset("demo", **{**SOURCE, **overrides})
    model = model_io.randomize_weights(model_io.build_model(hp.model, "float32"), seed=7)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_io.write_hparams(str(run_dir), hp)
    model_io.save_model(model, str(run_dir))
    return hp, model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("source") / "model_run"
    hp, model = _save_source(run_dir)
    return run_dir, hp, model


def _image(seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (1, 37, 45, 3)).astype(np.float32)


def _non_logits(model):
    return [layer for layer in model.layers if layer.weights and layer.name != finetune.LOGITS_LAYER]


def _assert_same_weights(a_layer, b_layer):
    a, b = a_layer.get_weights(), b_layer.get_weights()
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_other_class_count_copies_backbone_and_aspp_and_reinitialises_logits(source):
    run_dir, hp, src = source
    target = model_io.build_model(hp.model.replace(num_classes=5), "float32")
    fresh_logits = target.get_layer("logits").get_weights()
    report = finetune.warm_start(target, str(run_dir))
    assert report["source"] == str(run_dir) and report["source_config"]["num_classes"] == 21
    assert report["reinitialised"] == ["logits"] and "(1, 1, 8, 21) in the source" in report["reasons"]["logits"]
    assert "aspp/project" in report["copied"] and "mobilenet_v2_0.1/Conv1" in report["copied"]
    assert report["copied_weights"] == len(target.weights) - 2
    for layer in _non_logits(target):  # the backbone (a nested model) and the ASPP, every weight
        _assert_same_weights(layer, src.get_layer(layer.name))
    for kept, before in zip(target.get_layer("logits").get_weights(), fresh_logits):
        np.testing.assert_array_equal(kept, before)  # the fresh initialisation, not touched
    assert target(_image(), training=False).shape == (1, 37, 45, 5)


def test_same_class_count_copies_everything_and_gives_the_same_outputs(source):
    run_dir, hp, src = source
    target = model_io.build_model(hp.model, "float32")
    report = finetune.warm_start(target, str(run_dir / model_io.MODEL_FILENAME), log=None)
    assert report["reinitialised"] == [] and report["copied_weights"] == len(target.weights)
    image = _image(1)
    np.testing.assert_array_equal(target(image, training=False).numpy(), src(image, training=False).numpy())


def test_same_class_count_but_other_classes_reinitialises_the_logits(source):
    from data.label_map import LabelMap

    run_dir, hp, src = source
    loaded = model_io.load_model(str(run_dir))
    voc = loaded._replace(export_config={"label_map": LabelMap.voc().to_json_dict()})
    other = LabelMap(names=[f"thing_{i}" for i in range(21)], name="things")
    target = model_io.build_model(hp.model, "float32")
    report = finetune.warm_start(target, voc, log=None, label_map=other)
    assert report["reinitialised"] == ["logits"] and "other classes (background" in report["reasons"]["logits"]
    same = finetune.warm_start(model_io.build_model(hp.model, "float32"), voc, log=None, label_map=LabelMap.voc())
    assert same["reinitialised"] == []


def test_trainer_base_model_export_into_mixed_precision_at_output_stride_8(source, tmp_path):
    """The Trainer's base_model (a Model artifact's Format-Serving/ export) fills init_from; a float32 source
    initialises a mixed-precision model; output_stride 8 with doubled ASPP rates (the paper's second stage): the
    3x3 branches match by position."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from models.export import export_serving_model

    _, hp, src = source
    serving = tmp_path / "model" / "Format-Serving"
    export_serving_model(src, str(serving), hparams=hp, config=hp.model, tta=None, warmup_sizes=())

    assert hp.aspp_rates == (3, 6, 9)
    hp8 = hp.replace(output_stride=8, aspp_rates=(6, 12, 18))
    assert finetune.init_from_base_model(hp8, FnArgs(base_model=None)) is hp8
    explicit = hp8.replace(init_from="/explicit")
    assert finetune.init_from_base_model(explicit, FnArgs(base_model=str(serving))).init_from == "/explicit"
    assert finetune.init_from_base_model(hp8, FnArgs(base_model=str(serving))).init_from == str(serving)
    hp8 = finetune.init_from_base_model(hp8, FnArgs(base_model=str(serving)))

    target = model_io.build_model(hp8.model, "bfloat16")
    assert target.compute_dtype == "bfloat16" and target.get_layer("aspp").rates == (6, 12, 18)
    report = finetune.warm_start(target, hp8.init_from)
    assert report["reinitialised"] == []
    assert {"aspp/conv_3x3_rate6", "aspp/conv_3x3_rate12", "aspp/conv_3x3_rate18"} <= set(report["copied"])
    for t, s in zip(target.weights, src.weights):  # same order; the source's rate-3 branch went to rate 6
        assert t.dtype == s.dtype
        np.testing.assert_array_equal(t.numpy(), s.numpy())


def test_other_backbone_or_alpha_is_refused_naming_both_networks(source):
    run_dir, hp, _ = source
    resnet = model_io.build_model(hp.model.replace(backbone="resnet_v2_50", bn_epsilon=None), "float32")
    with pytest.raises(finetune.IncompatibleModelError) as error:
        finetune.warm_start(resnet, str(run_dir), config=hp.model.replace(backbone="resnet_v2_50"))
    text = str(error.value)
    assert "backbone=mobilenet_v2, alpha=0.1" in text and "backbone=resnet_v2_50" in text
    assert "init_from=null" in text and str(run_dir) in text
    wider = model_io.build_model(hp.model.replace(alpha=0.35), "float32")
    before = [w.numpy() for w in wider.weights]
    with pytest.raises(finetune.IncompatibleModelError, match="alpha"):
        finetune.warm_start(wider, str(run_dir))
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(wider.weights, before))  # nothing half-copied


def test_init_from_hparam_round_trips_and_parses_from_flags_set_and_custom_config(tmp_path):
    hp = hparams_lib.preset("demo", init_from="/models/voc/Format-Serving")
    assert hp.init_from == "/models/voc/Format-Serving" and hp.build_options()["weights"] is None
    assert hparams_lib.preset("paper").init_from is None and hparams_lib.preset("paper").build_options()["weights"]
    assert hparams_lib.HParams.from_dict(json.loads(json.dumps(hp.to_dict()))) == hp
    hp.to_json(str(tmp_path / "hparams.json"))
    assert hparams_lib.HParams.from_json(str(tmp_path / "hparams.json")) == hp
    for empty in (None, "", "none", "null"):
        assert hparams_lib.preset("demo", init_from=empty).init_from is None
    assert hparams_lib.preset("demo", init_from=tmp_path).init_from == str(tmp_path)  # os.PathLike
    with pytest.raises(ValueError, match="init_from"):
        hparams_lib.preset("demo", init_from=3)
    config = hparams_lib.from_custom_config({"preset": "demo", "hparams": json.dumps({"init_from": "gs://b/m"})})
    assert config.init_from == "gs://b/m"

    parser = argparse.ArgumentParser()  # `deeplab train`: one flag per field
    hparams_lib.add_flags(parser)
    assert hparams_lib.from_flags(parser.parse_args(["--init-from", "/m/run"])).init_from == "/m/run"
    assert hparams_lib.from_flags(parser.parse_args(["--init-from", "none"])).init_from is None

    from pipeline import cli as pipeline_cli  # `deeplab run --set init_from=PATH`

    parser = argparse.ArgumentParser()
    pipeline_cli.add_model_arguments(parser)
    options = pipeline_cli.model_options_from_args(parser.parse_args(["--set", "init_from=/m/export"]))
    assert hparams_lib.from_custom_config(options["train_config"]).init_from == "/m/export"


class _FirstWeights(keras.callbacks.Callback):
    """Records the weights and step training starts from (after BackupAndRestore's on_train_begin)."""

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())
        self.weights = [w.numpy().copy() for w in self.model.weights]


def test_train_starts_from_init_from_and_records_it(tmp_path):
    examples = tmp_path / "examples"
    write_records(examples / "Split-train" / "data_tfrecord-00000-of-00001.gz", 4, seed=1)
    write_records(examples / "Split-val" / "data_tfrecord-00000-of-00001.gz", 1, seed=2)
    tiny = dict(TINY_TRAIN, log_images=0, cache_decoded=False, shuffle_buffer=4, train_steps=2, steps_per_epoch=2)
    source_hp, source_model = _save_source(tmp_path / "source", **tiny)
    # weights "imagenet" is skipped with init_from (no ImageNet file is needed): the source replaces it.
    hp = source_hp.replace(init_from=str(tmp_path / "source"), weights="imagenet")
    first = _FirstWeights()
    report = train_lib.train(
        hp,
        str(examples / "Split-train"),
        str(examples / "Split-val"),
        str(tmp_path / "run"),
        callbacks=[first],
        verbose=0,
    )
    assert first.step == 0 and report["steps"] == 2
    for started, want in zip(first.weights, source_model.weights):
        np.testing.assert_array_equal(started, want.numpy())
    saved = json.loads((tmp_path / "run" / train_lib.REPORT_FILENAME).read_text())
    assert saved["init_from"]["source"] == str(tmp_path / "source") and saved["init_from"]["reinitialised"] == []
    assert saved["hparams"]["init_from"] == str(tmp_path / "source")


def test_v3_source_starts_a_v3plus_network_whose_decoder_and_logits_start_afresh(source, tmp_path):
    """init_from a V3 model into a DeepLabV3+ (mixed precision): backbone and ASPP copied; the decoder is new and
    the logits, which read the decoder, start afresh too. A V3+ source then initialises a V3+ network entirely."""
    run_dir, hp, src = source
    target = model_io.build_model(hp.model.replace(decoder="v3plus"), "mixed_bfloat16")
    fresh = {name: target.get_layer(name).get_weights() for name in ("decoder", "logits")}
    report = finetune.warm_start(target, str(run_dir))
    assert sorted(report["reinitialised"]) == ["decoder", "logits"]
    assert "no such layer" in report["reasons"]["decoder"] and "decoder" in report["reasons"]["logits"]
    for layer in _non_logits(src):
        _assert_same_weights(target.get_layer(layer.name), layer)
    for name, weights in fresh.items():
        for now, before in zip(target.get_layer(name).get_weights(), weights):
            np.testing.assert_array_equal(now, before)

    v3plus_dir = tmp_path / "v3plus_run"
    _, v3plus = _save_source(v3plus_dir, decoder="v3plus")
    again = model_io.build_model(hp.model.replace(decoder="v3plus"), "float32")
    report = finetune.warm_start(again, str(v3plus_dir))
    assert report["reinitialised"] == [] and "decoder" in report["copied"]
    np.testing.assert_array_equal(again(_image(), training=False), v3plus(_image(), training=False))
