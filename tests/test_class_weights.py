"""Class weights of the loss (issue 11, class imbalance): the weighted mean is exactly as defined (torch's
CrossEntropyLoss(weight=, ignore_index=) with reduction="mean"), the ignore label still contributes nothing,
the unweighted loss is unchanged, the histogram methods give their documented values, and HParams validates
and round-trips the field."""

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import hparams as hparams_lib
from models import losses
from models.losses import MaskedSparseCrossEntropy, class_weights_from_histogram, masked_softmax_cross_entropy

WEIGHTS = [0.5, 2.0, 1.0, 3.0]


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    labels[1, 3:, 4:] = 255
    return labels, logits


def _numpy_weighted_ce(labels, logits, weights, ignore_label=255):
    """sum_valid w[label] * ce / sum_valid w[label], in float64."""
    valid = labels != ignore_label
    z = logits[valid].astype(np.float64)
    log_softmax = z - z.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    ce = -log_softmax[np.arange(len(z)), labels[valid]]
    w = np.asarray(weights, np.float64)[labels[valid]]
    return (w * ce).sum() / w.sum()


def test_weighted_loss_is_the_weighted_mean_over_valid_pixels():
    labels, logits = _batch()
    expected = _numpy_weighted_ce(labels, logits, WEIGHTS)
    loss = masked_softmax_cross_entropy(labels, logits, class_weights=WEIGHTS)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # The Keras loss, with [B,H,W,1] uint8 labels as the input pipeline gives them.
    keras_loss = MaskedSparseCrossEntropy(class_weights=WEIGHTS)(labels[..., None].astype(np.uint8), logits)
    np.testing.assert_allclose(float(keras_loss), expected, rtol=1e-6)
    # Not the unweighted mean: the weights do change the value.
    assert abs(expected - _numpy_weighted_ce(labels, logits, [1.0] * 4)) > 1e-3
    # Scaling all weights leaves the weighted mean unchanged; equal weights give the unweighted mean.
    scaled = masked_softmax_cross_entropy(labels, logits, class_weights=[7 * w for w in WEIGHTS])
    np.testing.assert_allclose(float(scaled), expected, rtol=1e-6)
    uniform = masked_softmax_cross_entropy(labels, logits, class_weights=[2.0] * 4)
    np.testing.assert_allclose(float(uniform), float(masked_softmax_cross_entropy(labels, logits)), rtol=1e-6)


def test_ignore_label_contributes_no_loss_and_no_gradient_with_weights():
    labels, logits = _batch(1)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = masked_softmax_cross_entropy(labels, variable, class_weights=WEIGHTS)
    gradient = tape.gradient(loss, variable).numpy()
    ignored = labels == 255
    assert np.all(gradient[ignored] == 0.0)
    assert np.all(np.abs(gradient[~ignored]).sum(-1) > 0)
    # The gradient is that of the weighted mean: w[label] * (softmax - onehot) / sum w over valid pixels.
    z = logits.astype(np.float64)
    softmax = np.exp(z - z.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    safe = np.where(ignored, 0, labels)
    w = np.where(ignored, 0.0, np.asarray(WEIGHTS)[safe])
    expected = w[..., None] * (softmax - np.eye(4)[safe]) / w.sum()
    np.testing.assert_allclose(gradient, expected, atol=1e-6)
    # Whatever the logits under ignored pixels, the loss is the same.
    perturbed = logits.copy()
    perturbed[ignored] += 100.0
    np.testing.assert_allclose(
        float(masked_softmax_cross_entropy(labels, perturbed, class_weights=WEIGHTS)), float(loss), rtol=1e-6
    )
    # A class of weight 0 is as good as ignored: no loss, no gradient.
    zero_for_1 = [1.0, 0.0, 1.0, 1.0]
    with tf.GradientTape() as tape:
        loss = masked_softmax_cross_entropy(labels, variable, class_weights=zero_for_1)
    gradient = tape.gradient(loss, variable).numpy()
    assert np.all(gradient[labels == 1] == 0.0)
    np.testing.assert_allclose(float(loss), _numpy_weighted_ce(labels, logits, zero_for_1), rtol=1e-6)


def test_no_weighted_pixel_gives_zero_not_nan():
    all_ignored = np.full((1, 3, 3, 1), 255, np.uint8)
    assert float(MaskedSparseCrossEntropy(class_weights=[1.0] * 21)(all_ignored, tf.zeros((1, 3, 3, 21)))) == 0.0
    only_zero_weight = np.array([[[1, 1], [255, 1]]], np.int32)
    logits = tf.Variable(tf.random.normal((1, 2, 2, 3), seed=1))
    with tf.GradientTape() as tape:
        loss = masked_softmax_cross_entropy(only_zero_weight, logits, class_weights=[1.0, 0.0, 1.0])
    assert float(loss) == 0.0
    assert np.all(tape.gradient(loss, logits).numpy() == 0.0)


def test_unweighted_loss_is_bit_identical_to_before():
    def before(labels, logits, ignore_label=255):  # models/losses.py before class weights, verbatim
        labels = tf.cast(labels, tf.int32)
        if labels.shape.rank == 4:
            labels = tf.squeeze(labels, axis=-1)
        valid = tf.not_equal(labels, ignore_label)
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
        per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=safe_labels, logits=tf.cast(logits, tf.float32)
        )
        weights = tf.cast(valid, tf.float32)
        return tf.reduce_sum(per_pixel * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    for seed in range(3):
        labels, logits = _batch(seed)
        expected = before(labels, logits).numpy()
        assert masked_softmax_cross_entropy(labels, logits).numpy() == expected
        assert masked_softmax_cross_entropy(labels, logits, class_weights=None).numpy() == expected
        assert MaskedSparseCrossEntropy()(labels[..., None], logits).numpy() == expected
    assert MaskedSparseCrossEntropy().class_weights is None


def test_keras_loss_carries_the_weights_in_its_config():
    loss = MaskedSparseCrossEntropy(class_weights=np.array(WEIGHTS))
    assert loss.get_config()["class_weights"] == WEIGHTS
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, MaskedSparseCrossEntropy) and restored.class_weights == WEIGHTS
    assert MaskedSparseCrossEntropy.from_config(MaskedSparseCrossEntropy().get_config()).class_weights is None
    config = MaskedSparseCrossEntropy().get_config()
    del config["class_weights"]  # a model saved before class weights existed
    assert MaskedSparseCrossEntropy.from_config(config).class_weights is None
    with pytest.raises(ValueError, match="class_weights"):
        MaskedSparseCrossEntropy(class_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="one weight per class"):
        labels, logits = _batch()
        masked_softmax_cross_entropy(labels, logits, class_weights=[1.0, 2.0])


# --- weights from a class pixel histogram --------------------------------------------------------------------


def _histogram_256(counts):
    """LabelStatsGen's 256-bin "pixels": class counts first, plus ignore (255) and an out-of-range value."""
    pixels = np.zeros(256, np.int64)
    pixels[: len(counts)] = counts
    pixels[255] = 5000  # ignore: not a class
    pixels[7] = 123  # out of range for num_classes=4: not a class
    return pixels.tolist()


def test_median_frequency_weights_exact():
    # freq = [4/9, 0, 4/9, 1/9]; median over the present classes = 4/9 -> w = median / freq; absent class 1 -> 0
    pixels = _histogram_256([400, 0, 400, 100])
    assert class_weights_from_histogram(pixels, "median_frequency", num_classes=4) == pytest.approx(
        [1.0, 0.0, 1.0, 4.0], rel=1e-12
    )
    assert class_weights_from_histogram(pixels, "auto", num_classes=4) == class_weights_from_histogram(
        pixels, "median_frequency", num_classes=4
    )
    # An even number of present classes: the median is the mean of the middle two, (0.3 + 0.15) / 2 = 0.225.
    assert class_weights_from_histogram([50, 30, 15, 5], "median_frequency") == pytest.approx(
        [0.45, 0.75, 1.5, 4.5], rel=1e-12
    )


def test_inverse_sqrt_weights_exact_and_pixel_weighted_mean_one():
    # freq = [4/9, 0, 4/9, 1/9], sqrt = [2/3, -, 2/3, 1/3], sum sqrt(freq) = 5/3; w = 1 / (sqrt(freq) * 5/3)
    pixels = _histogram_256([400, 0, 400, 100])
    weights = class_weights_from_histogram(pixels, "inverse_sqrt", num_classes=4)
    assert weights == pytest.approx([0.9, 0.0, 0.9, 1.8], rel=1e-12)
    freq = np.array([400, 0, 400, 100]) / 900
    assert float(np.dot(freq, weights)) == pytest.approx(1.0, rel=1e-12)
    # 9:16 -> sqrt 3/5, 4/5, sum 7/5 -> w = 25/21, 25/28
    assert class_weights_from_histogram([9, 16], "inverse_sqrt") == pytest.approx([25 / 21, 25 / 28], rel=1e-12)


def test_histogram_weights_errors():
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weights_from_histogram([0, 0, 0], "auto")
    with pytest.raises(ValueError, match="method 'inverse'"):
        class_weights_from_histogram([1, 2], "inverse")
    assert set(losses.CLASS_WEIGHT_METHODS) == set(hparams_lib.CLASS_WEIGHT_METHODS)


def test_weights_from_the_training_examples_use_the_transform_graph_counts(tmp_path):
    from data import tfrecord
    from data.label_histogram import histogram_of_examples
    from models import train as train_lib
    from tests.test_ingest_label_stats import write_split

    rng = np.random.default_rng(4)
    masks = [rng.choice(np.array([0, 0, 0, 1, 2, 255], np.uint8), size=(9, 11)) for _ in range(3)]
    write_split(str(tmp_path), "train", masks)
    split = str(tmp_path / "Split-train")
    expected = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=256)
    # LabelStatsGen's histogram counts the same pixels as the Transform's analyzers.
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(split + "/*"), compression_type="GZIP")
    assert histogram_of_examples(records.as_numpy_iterator())["pixels"] == expected.tolist()
    assert tfrecord.IGNORE_LABEL == 255

    hp = hparams_lib.preset("demo", num_classes=4, class_weights="auto")
    statistics, _, _ = train_lib.dataset_statistics(hp, split, work_dir=str(tmp_path / "work"))
    assert list(statistics.class_pixels) == expected[:4].tolist() and statistics.num_examples == 3
    weights, how = train_lib.resolve_class_weights(hp, statistics)
    assert weights == class_weights_from_histogram(expected[:4], "median_frequency")
    assert weights[3] == 0.0 and weights[1] > weights[0]  # class 3 absent; class 1 rarer than class 0
    assert how.startswith("auto: median_frequency over the class pixel counts of 3 training examples")
    weights, _ = train_lib.resolve_class_weights(hp.replace(class_weights="inverse_sqrt"), statistics)
    assert weights == class_weights_from_histogram(expected[:4], "inverse_sqrt")
    # Given weights and no weights need no statistics.
    assert train_lib.resolve_class_weights(hp.replace(class_weights=[1, 2, 3, 4])) == ([1.0, 2.0, 3.0, 4.0], "given")
    assert train_lib.resolve_class_weights(hp.replace(class_weights=None)) == (None, "off")
    with pytest.raises(ValueError, match="needs the dataset statistics"):
        train_lib.resolve_class_weights(hp)


# --- hyper-parameters ---------------------------------------------------------------------------------------


def test_hparams_class_weights_default_methods_and_lists():
    assert hparams_lib.preset().class_weights is None
    assert hparams_lib.preset("demo").class_weights is None
    for given, expected in [
        ("auto", "auto"),
        ("Median_Frequency", "median_frequency"),
        ("inverse_sqrt", "inverse_sqrt"),
        ("none", None),
        ("null", None),
        ("", None),
        (None, None),
        ([1, 2, 0.5], (1.0, 2.0, 0.5)),
        ((1, 2, 0.5), (1.0, 2.0, 0.5)),
        ("1,2,0.5", (1.0, 2.0, 0.5)),
        ("1 2 0.5", (1.0, 2.0, 0.5)),
        ("[1, 2, 0.5]", (1.0, 2.0, 0.5)),
        ([0, 1, 0], (0.0, 1.0, 0.0)),
    ]:
        assert hparams_lib.preset("demo", num_classes=3, class_weights=given).class_weights == expected, given


@pytest.mark.parametrize(
    "given, match",
    [
        ([1.0, 2.0], r"class_weights: got 2 weight\(s\) but num_classes is 3; give one weight per class id 0\.\.2"),
        ("1,2,3,4", r"class_weights: got 4 weight\(s\) but num_classes is 3"),
        ([1.0, -1.0, 1.0], "class_weights: got .* expected finite weights >= 0, not all 0"),
        ([0, 0, 0], "class_weights: got .* expected finite weights >= 0, not all 0"),
        ([1.0, float("nan"), 1.0], "class_weights: got .* expected finite weights >= 0"),
        ("median", "class_weights: got 'median', expected null .*'auto' / 'median_frequency' / 'inverse_sqrt'"),
        ("1,two,3", "class_weights: got '1,two,3', expected .*3 non-negative numbers, one per class id"),
        (0.5, "class_weights: got 0.5, expected"),
        ({"a": 1}, "class_weights: got"),
    ],
)
def test_hparams_class_weights_validation(given, match):
    with pytest.raises(ValueError, match=match):
        hparams_lib.preset("demo", num_classes=3, class_weights=given)


def test_hparams_class_weights_follow_num_classes():
    hp = hparams_lib.preset("demo", num_classes=3, class_weights=[1, 2, 3])
    with pytest.raises(ValueError, match="class_weights: got 3 weight"):
        hp.replace(num_classes=4)
    assert hp.replace(num_classes=4, class_weights=[1, 1, 1, 2]).class_weights == (1.0, 1.0, 1.0, 2.0)
    assert hp.replace(num_classes=4, class_weights="auto").class_weights == "auto"


def test_hparams_class_weights_round_trip(tmp_path):
    for value in ([1.0, 2.5, 0.0], "auto", "inverse_sqrt", None):
        hp = hparams_lib.preset("demo", num_classes=3, class_weights=value)
        assert hparams_lib.HParams.from_dict(hp.to_dict()) == hp
        path = tmp_path / "hparams.json"
        resolved = [0.5, 1.0, 2.0] if isinstance(value, str) else None
        hp.to_json(str(path), precision_resolved="float32", class_weights_resolved=resolved)
        recorded = json.loads(path.read_text())
        assert recorded["class_weights"] == value and recorded["class_weights_resolved"] == resolved
        assert hparams_lib.HParams.from_json(str(path)) == hp
    # custom_config (TFX Trainer), also nested as JSON text.
    tfx = hparams_lib.from_custom_config({"preset": "demo", "num_classes": 3, "class_weights": [1, 2, 3]})
    assert tfx.class_weights == (1.0, 2.0, 3.0)
    nested = hparams_lib.from_custom_config(
        {"preset": "demo", "hparams": '{"num_classes": 3, "class_weights": "auto"}'}
    )
    assert nested.class_weights == "auto"


def test_class_weights_from_pipeline_set_and_train_flags():
    from pipeline import cli as pipeline_cli

    parser = argparse.ArgumentParser()
    pipeline_cli.add_model_arguments(parser)
    for text, expected in [("1,2,3", (1.0, 2.0, 3.0)), ("[1, 2, 3]", (1.0, 2.0, 3.0)), ("auto", "auto")]:
        args = parser.parse_args(["--preset", "demo", "--set", "num_classes=3", "--set", f"class_weights={text}"])
        config = pipeline_cli.model_options_from_args(args)["train_config"]
        assert hparams_lib.from_custom_config(config).class_weights == expected
    args = parser.parse_args(["--preset", "demo", "--set", "class_weights=1,2"])
    with pytest.raises(SystemExit, match="class_weights: got 2 weight"):
        pipeline_cli.model_options_from_args(args)

    parser = argparse.ArgumentParser()
    hparams_lib.add_flags(parser)
    for text, expected in [("1,2,3", (1.0, 2.0, 3.0)), ("inverse_sqrt", "inverse_sqrt"), ("none", None)]:
        args = parser.parse_args(["--preset", "demo", "--num-classes", "3", "--class-weights", text])
        assert hparams_lib.from_flags(args).class_weights == expected
    with pytest.raises(ValueError, match="class_weights"):
        hparams_lib.from_flags(parser.parse_args(["--class-weights", "sqrt"]))


def test_compile_model_uses_the_given_or_resolved_weights():
    from models.train import compile_model

    model = keras.Sequential([keras.layers.Input((4, 4, 3)), keras.layers.Conv2D(3, 1)])
    hp = hparams_lib.preset("demo", num_classes=3, class_weights=[1, 2, 3])
    assert compile_model(model, hp, 10).loss.class_weights == [1.0, 2.0, 3.0]
    assert compile_model(model, hp.replace(class_weights=None), 10).loss.class_weights is None
    auto = hp.replace(class_weights="auto")
    assert compile_model(model, auto, 10, class_weights=[0.5, 1.0, 2.0]).loss.class_weights == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="resolve_class_weights"):
        compile_model(model, auto, 10)


class _Compiled(Exception):
    pass


def test_training_resolves_logs_records_and_compiles_the_weights(tmp_path, caplog, monkeypatch):
    """train() with class_weights="inverse_sqrt" up to compile_model (a real fit costs minutes of tracing on this
    CPU): weights resolved from the training examples, logged, in hparams.json (which reloads to the same
    HParams) and passed to the loss."""
    import logging

    from models import model_io
    from models import train as train_lib
    from tests.test_train_data import write_records

    write_records(tmp_path / "ex" / "Split-train" / "data_tfrecord-00000-of-00001.gz", 2, seed=1)
    write_records(tmp_path / "ex" / "Split-val" / "data_tfrecord-00000-of-00001.gz", 1, seed=2)
    hp = hparams_lib.preset("demo", crop_size=33, batch_size=2, log_images=0, class_weights="inverse_sqrt")
    train_split = str(tmp_path / "ex" / "Split-train")
    statistics, _, _ = train_lib.dataset_statistics(hp, train_split, work_dir=str(tmp_path / "stats"))
    expected, _ = train_lib.resolve_class_weights(hp, statistics)
    assert len(expected) == hp.num_classes and sum(w > 0 for w in expected) >= 2

    def compile_model(model, hparams, total_steps, class_weights=None):
        raise _Compiled(class_weights)

    monkeypatch.setattr(train_lib, "build_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(train_lib, "compile_model", compile_model)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="models.train"), pytest.raises(_Compiled) as compiled:
        train_lib.train(hp, train_split, str(tmp_path / "ex" / "Split-val"), str(run_dir), verbose=0)
    assert compiled.value.args == (expected,)
    assert "Class weights of the loss (inverse_sqrt: inverse_sqrt over the class pixel counts of 2" in caplog.text
    assert "Dataset statistics from the transform graph" in caplog.text and "analyzed in this process" in caplog.text
    recorded = json.loads((run_dir / model_io.HPARAMS_FILENAME).read_text())
    assert recorded["class_weights"] == "inverse_sqrt" and recorded["class_weights_resolved"] == expected
    assert hparams_lib.HParams.from_json(str(run_dir / model_io.HPARAMS_FILENAME)) == hp
