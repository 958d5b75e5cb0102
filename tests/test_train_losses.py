"""Loss (ignore label: no loss, no gradient), weight decay in the total loss, streaming mIoU, hparams."""

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models import hparams as hparams_lib
from models.config import ModelConfig
from models.confusion import iou_from_confusion
from models.deeplab import build_deeplab_v3
from models.losses import MaskedSparseCrossEntropy, masked_softmax_cross_entropy
from models.metrics import StreamingMeanIoU


def test_ignore_label_contributes_no_loss_and_no_gradient():
    rng = np.random.default_rng(0)
    logits = tf.Variable(rng.normal(size=(2, 5, 6, 4)).astype(np.float32))
    labels = rng.integers(0, 4, size=(2, 5, 6)).astype(np.int32)
    labels[0, :2] = 255
    labels[1, 3:, 4:] = 255
    with tf.GradientTape() as tape:
        loss = masked_softmax_cross_entropy(labels, logits)
    gradient = tape.gradient(loss, logits).numpy()
    ignored = labels == 255
    assert np.all(gradient[ignored] == 0.0)
    assert np.all(np.abs(gradient[~ignored]).sum(-1) > 0)
    # Mean over valid pixels only; changing logits under ignored pixels changes nothing.
    valid_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels[~ignored], logits.numpy()[~ignored])
    np.testing.assert_allclose(loss.numpy(), valid_ce.numpy().mean(), rtol=1e-6)
    perturbed = logits.numpy().copy()
    perturbed[ignored] += 100.0
    np.testing.assert_allclose(masked_softmax_cross_entropy(labels, perturbed).numpy(), loss.numpy(), rtol=1e-6)


def test_all_ignored_gives_zero_not_nan():
    loss = MaskedSparseCrossEntropy()(np.full((1, 3, 3, 1), 255, np.uint8), tf.zeros((1, 3, 3, 21)))
    assert float(loss) == 0.0


def test_weight_decay_is_added_to_the_training_loss():
    images = np.random.default_rng(1).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    labels = np.random.default_rng(2).integers(0, 3, (2, 33, 33, 1)).astype(np.uint8)
    losses = {}
    for decay in (0.0, 1e-2):
        keras.utils.set_random_seed(0)
        model = build_deeplab_v3(
            ModelConfig(num_classes=3, backbone="mobilenet_v2", alpha=0.35, aspp_filters=8), weight_decay=decay
        )
        model.compile(loss=MaskedSparseCrossEntropy())
        losses[decay] = (model.evaluate(images, labels, verbose=0), model)
    model = losses[1e-2][1]
    kernels = [
        w
        for layer in model.submodules
        for w in (
            [layer.kernel]
            if isinstance(layer, keras.layers.Conv2D)
            else [layer.depthwise_kernel]
            if isinstance(layer, keras.layers.DepthwiseConv2D)
            else []
        )
    ]
    expected_decay = 1e-2 / 2 * sum(float(tf.reduce_sum(k**2)) for k in kernels)  # slim: wd * sum(w^2) / 2
    assert expected_decay > 0.1
    np.testing.assert_allclose(losses[1e-2][0] - losses[0.0][0], expected_decay, rtol=1e-3)


def test_streaming_miou_matches_numpy_and_ignores_255():
    rng = np.random.default_rng(3)
    metric = StreamingMeanIoU(num_classes=4)
    confusion = np.zeros((4, 4))
    for _ in range(3):
        labels = rng.integers(0, 4, (2, 7, 9)).astype(np.uint8)
        labels[:, 0] = 255
        logits = rng.normal(size=(2, 7, 9, 4)).astype(np.float32)
        metric.update_state(labels[..., None], logits)
        predictions = logits.argmax(-1)
        valid = labels != 255
        np.add.at(confusion, (labels[valid], predictions[valid]), 1)
    np.testing.assert_array_equal(metric.confusion.numpy(), confusion)
    _, expected = iou_from_confusion(confusion)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_miou_leaves_out_absent_classes():
    metric = StreamingMeanIoU(num_classes=21)
    labels = np.array([[[0, 0, 1, 255]]], np.uint8)
    logits = tf.one_hot([[[0, 0, 1, 5]]], 21)  # the 255 pixel predicts class 5: must not count
    metric.update_state(labels, logits)
    assert float(metric.result()) == 1.0


def test_hparams_json_custom_config_and_flags(tmp_path):
    hp = hparams_lib.preset("demo", output_stride=8)
    path = tmp_path / "hparams.json"
    hp.to_json(str(path))
    assert hparams_lib.HParams.from_json(str(path)) == hp
    assert json.loads(path.read_text())["model"]["multi_grid"] == [1, 2, 4]  # ModelConfig.to_dict() under "model"
    paper = hparams_lib.preset()
    assert (paper.backbone, paper.output_stride, paper.crop_size, paper.learning_rate, paper.weight_decay) == (
        "resnet_v2_50",
        16,
        513,
        0.007,
        1e-4,
    )
    tfx = hparams_lib.from_custom_config(
        {"preset": "demo", "batch_size": 4, "hparams": '{"crop_size": 65}'}, train_steps=7, eval_steps=3
    )
    assert (tfx.backbone, tfx.batch_size, tfx.crop_size, tfx.train_steps, tfx.eval_steps) == (
        "mobilenet_v2",
        4,
        65,
        7,
        3,
    )
    with pytest.raises(ValueError, match="learnig_rate"):
        hparams_lib.from_custom_config({"learnig_rate": 0.1})
    with pytest.raises(ValueError, match="output_stride"):
        hparams_lib.preset("paper", output_stride=12)
    parser = argparse.ArgumentParser()
    hparams_lib.add_flags(parser)
    args = parser.parse_args(
        [
            "--preset",
            "paper",
            "--output-stride",
            "8",
            "--multi-grid",
            "1,1,1",
            "--weights",
            "none",
            "--xla",
            "true",
            "--aspp-rates",
            "3,6",
        ]
    )
    flagged = hparams_lib.from_flags(args)
    assert (flagged.output_stride, flagged.multi_grid, flagged.weights, flagged.xla, flagged.aspp_rates) == (
        8,
        (1, 1, 1),
        None,
        True,
        (3, 6),
    )
    assert flagged.crop_size == 513


def test_streaming_miou_compiles_with_xla():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, (2, 6, 5)).astype(np.int32)
    labels[0, 0] = 255
    logits = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
    eager, compiled = StreamingMeanIoU(num_classes=4), StreamingMeanIoU(num_classes=4)
    eager.update_state(labels, logits)

    @tf.function(jit_compile=True)
    def update(y_true, y_pred):
        compiled.update_state(y_true, y_pred)

    update(labels, logits)
    np.testing.assert_array_equal(compiled.confusion.numpy(), eager.confusion.numpy())
