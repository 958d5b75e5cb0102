"""Batched evaluation (issue 8): images the model sees at the same size share one model call, and
every image still gets exactly its one-image answer, so the confusion matrices are the same
integers as with batch_size=1 (whole image, TTA variants, current and baseline model)."""

import numpy as np
import pytest
import tensorflow as tf

from components.miou_evaluator import beam_eval
from models import inference
from models.inference import TTAConfig
from tests.test_eval_support import colour_table, write_examples

N_IMAGES = 9  # test_eval_support.make_sample: 32x32, 32x36, 32x40, three of each


def save_context_model(export_dir, table, seed=0):
    """A SavedModel `logits` signature whose answers depend on the whole image and its size, like
    DeepLab's (image pooling over the canvas, strided pooling, bilinear upsampling): padding images
    of different sizes into one canvas would change them, so only exact grouping passes the tests."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(3, table.shape[0])).astype(np.float32) / 50.0

    class ContextModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.colours = tf.Variable(table, trainable=False)
            self.mix = tf.Variable(mix, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def logits(self, images):
            size = tf.shape(images)[1:3]
            d = -tf.reduce_sum(tf.square(images[:, :, :, None, :] - self.colours), axis=-1) / 1000.0
            pooled = tf.reduce_mean(images, axis=[1, 2], keepdims=True)  # "image pooling"
            coarse = tf.nn.avg_pool2d(images, 3, strides=2, padding="SAME")
            local = tf.image.resize(coarse, size, method="bilinear")
            context = tf.einsum("bhwk,kc->bhwc", 0.5 * pooled + local - 128.0, self.mix)
            return {"logits": d + context}

    module = ContextModel()
    tf.saved_model.save(module, str(export_dir), signatures={"logits": module.logits})
    return str(export_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    samples = write_examples(str(root / "examples" / "Split-val"), N_IMAGES, extra_records=[b"not an example"])
    return {
        "root": root,
        "samples": samples,
        "pattern": beam_eval.resolve_examples(root / "examples", "val"),
        "current": save_context_model(root / "current", colour_table(), seed=0),
        "baseline": save_context_model(root / "baseline", colour_table(swap=(8, 12)), seed=1),
    }


# --- models.inference helpers -----------------------------------------------------------------


def test_batch_keys_and_groups():
    whole = TTAConfig().kwargs()
    assert inference.shared_canvas(20, 33, **whole) is None
    assert inference.batch_key(20, 33, **whole) == (20, 33)
    padded = TTAConfig(pad_multiple=16, pad_offset=1).kwargs()
    assert inference.shared_canvas(20, 33, **padded) == (33, 33)
    assert inference.batch_key(34, 17, **padded) == (49, 17)
    # Flip or other scales pad the flipped / scaled image: no shared canvas, exact sizes only.
    for tta in (TTAConfig(pad_multiple=16, flip=True), TTAConfig(pad_multiple=16, scales=(0.5, 1))):
        kwargs = tta.kwargs()
        assert inference.shared_canvas(20, 33, **kwargs) is None and inference.batch_key(20, 33, **kwargs) == (20, 33)
    shapes = [(10, 12, 3), (10, 13, 3), (10, 12, 3), (10, 12, 3), (11, 12, 3)]
    assert inference.size_groups(shapes, 2, **whole) == [
        ((10, 12), [0, 2]),
        ((10, 12), [3]),
        ((10, 13), [1]),
        ((11, 12), [4]),
    ]
    # Pad 8k+1: every size here goes to 17x17, one canvas.
    assert inference.size_groups(shapes, 8, pad_multiple=8, pad_offset=1) == [((17, 17), [0, 1, 2, 3, 4])]
    assert inference.size_groups(shapes, 1, **whole) == [
        ((10, 12), [0]),
        ((10, 12), [2]),
        ((10, 12), [3]),
        ((10, 13), [1]),
        ((11, 12), [4]),
    ]


def test_pad_to_canvas_is_the_one_image_path_padding():
    seen = []

    def spy(images):
        seen.append(images.numpy())
        return images[..., :2]

    x = np.random.default_rng(2).uniform(0, 255, size=(1, 20, 27, 3)).astype(np.float32)
    inference.predict_logits(spy, x, pad_multiple=16, pad_offset=1)
    canvas = inference.shared_canvas(20, 27, **TTAConfig(pad_multiple=16, pad_offset=1).kwargs())
    assert canvas == (33, 33)
    np.testing.assert_array_equal(inference.pad_to_canvas(x, *canvas).numpy(), seen[0])  # bit for bit


# --- the predictor: batched == one image at a time, bit for bit --------------------------------

MIXED_SIZES = ((40, 50), (40, 50), (33, 21), (40, 50), (45, 47), (33, 21), (48, 49), (40, 50))

PREDICTOR_TTAS = {
    "whole": TTAConfig(),
    "pad canvas": TTAConfig(pad_multiple=16, pad_offset=1),
    "scales+flip": TTAConfig(scales=(0.75, 1.0), flip=True),
    "sliding": TTAConfig(mode="sliding", crop_size=(24, 32), stride_fraction=0.5),
}


@pytest.mark.parametrize("name", sorted(PREDICTOR_TTAS))
def test_predict_batch_equals_one_image_path(setup, name):
    tta = PREDICTOR_TTAS[name]
    predictor = beam_eval._load_predictor(setup["current"], tta, 21)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8) for h, w in MIXED_SIZES]
    one_by_one = [predictor.predict(image) for image in images]
    calls = predictor.calls
    batched = predictor.predict_batch(images, batch_size=3)
    batched_calls = predictor.calls - calls
    for image, a, b in zip(images, one_by_one, batched):
        assert b.shape == image.shape[:2] and b.dtype == np.int64
        np.testing.assert_array_equal(a, b)
    # e.g. whole: 40x50 x4 (a batch of 3 and one of 1), 33x21 x2, 45x47, 48x49: 5 calls for 8 images.
    expected = len(inference.size_groups([i.shape for i in images], 3, **tta.kwargs()))
    assert batched_calls == expected < len(images)


def test_padding_into_a_larger_canvas_would_change_the_answers(setup):
    # Why images are grouped by exact (or one-image-path canvas) size: the context model, like
    # DeepLab, answers differently for the same pixels in a larger canvas.
    predictor = beam_eval._load_predictor(setup["current"], TTAConfig(), 21)
    image = np.random.default_rng(4).integers(0, 256, size=(33, 21, 3)).astype(np.uint8)
    alone = predictor.predict(image)
    canvas = inference.pad_to_canvas(image[np.newaxis].astype(np.float32), 48, 49)
    in_canvas = predictor._run(predictor._canvas_labels_fn, canvas)[0, :33, :21]
    assert (alone != in_canvas).sum() > 0


# --- the Beam evaluation: identical confusion matrices, fewer model calls ----------------------


@pytest.mark.parametrize("tta", [TTAConfig(), TTAConfig(scales=(0.75, 1.0), flip=True)], ids=["whole", "tta"])
def test_beam_batched_confusion_matrices_are_identical(setup, tta, tmp_path):
    model_dirs = {beam_eval.CURRENT: setup["current"], beam_eval.BASELINE: setup["baseline"]}
    runs = {}
    for batch_size in (1, 4):
        runs[batch_size] = beam_eval.run_beam_evaluation(
            model_dirs,
            tta,
            staging_dir=str(tmp_path / f"b{batch_size}"),
            examples_pattern=setup["pattern"],
            num_gallery=2,
            batch_size=batch_size,
        )
    one, batched = runs[1], runs[4]
    for name in model_dirs:
        assert one["cm"][name].sum() > 0
        np.testing.assert_array_equal(one["cm"][name], batched["cm"][name])  # exact integers
        assert one["images"][name] == batched["images"][name]
    assert not np.array_equal(one["cm"][beam_eval.CURRENT], one["cm"][beam_eval.BASELINE])
    assert [f for f, _ in one["best"]] == [f for f, _ in batched["best"]]
    assert one["skipped"] == batched["skipped"] and len(one["skipped"]) == 1
    assert one["counters"]["images_evaluated"] == batched["counters"]["images_evaluated"] == N_IMAGES
    # 9 images in 3 sizes: 9 one-image calls vs 3 sizes x ceil(3 / 4) batches.
    assert one["counters"]["model_calls"] == N_IMAGES
    assert batched["counters"]["model_calls"] == 3
    assert batched["batch_size"] == 4


def test_evaluate_records_batch_size_and_rejects_bad_values(setup, tmp_path):
    from components.miou_evaluator.evaluate import evaluate

    result = evaluate(
        setup["current"],
        str(tmp_path),
        examples_pattern=setup["pattern"],
        tensorboard=False,
        num_gallery=0,
        batch_size=16,
        tta=TTAConfig(pad_multiple=16, pad_offset=1),
    )
    assert result["batch_size"] == 16 and result["data"]["images_evaluated"] == N_IMAGES
    # 32x32 -> 33x33, 32x36 and 32x40 -> 33x49: two canvases, two calls.
    assert result["beam_counters"]["model_calls"] == 2
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(setup["current"], str(tmp_path / "x"), examples_pattern=setup["pattern"], batch_size=0)


# --- loading only the `logits` signature ---------------------------------------------------------


def test_partial_load_runs_the_same_function_as_the_full_load(setup):
    function, _ = beam_eval._load_signature_only(setup["baseline"])
    full = tf.saved_model.load(setup["baseline"]).signatures["logits"]
    x = tf.constant(np.random.default_rng(5).uniform(0, 255, size=(2, 19, 23, 3)).astype(np.float32))
    np.testing.assert_array_equal(function(images=x)["logits"].numpy(), full(images=x)["logits"].numpy())


def test_model_without_logits_signature_still_names_the_problem(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    module.f = tf.function(lambda x: x * module.v, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    with pytest.raises(ValueError, match="no 'logits' signature"):
        beam_eval._load_predictor(str(tmp_path), TTAConfig(), 21)


# --- the option: component parameter and `deeplab evaluate --batch-size` -----------------------


def test_component_batch_size_parameter():
    from tfx.types import Channel, standard_artifacts

    from components.miou_evaluator.component import MiouEvaluator

    def make(**kwargs):
        return MiouEvaluator(
            examples=Channel(type=standard_artifacts.Examples), model=Channel(type=standard_artifacts.Model), **kwargs
        )

    assert make().exec_properties["batch_size"] == beam_eval.DEFAULT_BATCH_SIZE
    assert make(batch_size=1).exec_properties["batch_size"] == 1
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=0)


def test_cli_batch_size(setup, capsys):
    import json

    import runner

    def evaluate(batch_size, out, *flags):
        return runner.main(
            ["evaluate", "--model", setup["current"], "--examples", str(setup["root"] / "examples")]
            + ["--batch-size", batch_size, "--output-dir", str(out), *flags]
        )

    out = setup["root"] / "cli"
    rc = evaluate("2", out, "--no-tensorboard", "--num-gallery", "0")
    assert rc == 0 and "report:" in capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    assert result["batch_size"] == 2 and result["beam_counters"]["model_calls"] == 6  # 3 sizes x ceil(3/2)
    with pytest.raises(SystemExit, match="batch-size"):
        evaluate("0", setup["root"] / "x")
