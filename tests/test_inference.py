"""models/inference.py: whole / sliding / multi-scale / flip inference against independent computations."""

import numpy as np
import pytest
import tensorflow as tf

from models import inference

C = 5
RNG = np.random.default_rng(0)
W_MIX = RNG.normal(size=(3, C)).astype(np.float32)
B_MIX = RNG.normal(size=(C,)).astype(np.float32)


def per_pixel_fn(images):
    """Affine map of each pixel's RGB to C logits: no spatial context, so every mode must agree."""
    return tf.einsum("bhwk,kc->bhwc", images, W_MIX) + B_MIX


def per_pixel_np(images):
    return np.einsum("bhwk,kc->bhwc", images.astype(np.float64), W_MIX.astype(np.float64)) + B_MIX


def random_images(b, h, w, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, size=(b, h, w, 3)).astype(np.float32)


def test_whole_single_scale_is_the_function():
    x = random_images(2, 13, 17)
    out = inference.predict_logits(per_pixel_fn, x).numpy()
    np.testing.assert_allclose(out, per_pixel_np(x), rtol=1e-5, atol=1e-3)


def test_pad_multiple_pads_with_mean_and_crops_back():
    seen = []

    def fn(images):
        seen.append(images.numpy())
        return per_pixel_fn(images)

    x = random_images(1, 20, 33)
    out = inference.predict_logits(fn, x, pad_multiple=16, pad_offset=1).numpy()
    # 20 -> 33 (2*16+1), 33 -> 33 (already 2*16+1)
    assert seen[0].shape == (1, 33, 33, 3)
    np.testing.assert_allclose(seen[0][0, 20:, :, :], np.broadcast_to(inference.MEAN_RGB, (13, 33, 3)), atol=1e-4)
    np.testing.assert_allclose(seen[0][:, :20, :33], x, atol=1e-4)
    np.testing.assert_allclose(out, per_pixel_np(x), rtol=1e-5, atol=1e-3)


def test_sliding_window_recovers_per_pixel_function():
    x = random_images(2, 40, 29)
    calls = []

    def fn(images):
        calls.append(tuple(images.shape))
        return per_pixel_fn(images)

    out = inference.predict_logits(fn, x, mode="sliding", crop_size=(16, 12), stride_fraction=0.5).numpy()
    np.testing.assert_allclose(out, per_pixel_np(x), rtol=1e-5, atol=1e-3)
    # stride 8 x 6: rows start 0,8,16,24 (flush) -> 4; cols 0,6,12,17 (flush) -> 4
    assert calls == [(2, 16, 12, 3)] * 16


def _window_position_fn(images):
    """Logits depend on the position inside the window: exposes how windows are placed and averaged."""
    shape = tf.shape(images)
    yy = tf.cast(tf.range(shape[1]), tf.float32)[:, None] * tf.ones([1, shape[2]])
    xx = tf.cast(tf.range(shape[2]), tf.float32)[None, :] * tf.ones([shape[1], 1])
    pos = tf.stack([yy, xx, yy * xx, tf.ones_like(yy), -yy], axis=-1)[None]
    return per_pixel_fn(images) + pos


def test_sliding_window_averages_overlaps_like_a_loop():
    x = random_images(1, 23, 31, seed=3)
    ch, cw, frac = 10, 12, 2.0 / 3.0
    out = inference.predict_logits(
        _window_position_fn, x, mode="sliding", crop_size=(ch, cw), stride_fraction=frac
    ).numpy()
    # Independent loop: window starts every ceil(0.667 * size) and one flush with the far edge.
    sh, sw = int(np.ceil(ch * frac)), int(np.ceil(cw * frac))
    ys = sorted({min(y, 23 - ch) for y in range(0, 23 - ch + sh, sh)})
    xs = sorted({min(v, 31 - cw) for v in range(0, 31 - cw + sw, sw)})
    assert ys[-1] == 23 - ch and xs[-1] == 31 - cw
    total = np.zeros((23, 31, C))
    count = np.zeros((23, 31, 1))
    for y in ys:
        for v in xs:
            win = _window_position_fn(tf.constant(x[:, y : y + ch, v : v + cw])).numpy()[0]
            total[y : y + ch, v : v + cw] += win
            count[y : y + ch, v : v + cw] += 1
    np.testing.assert_allclose(out[0], total / count, rtol=1e-5, atol=1e-3)


def test_sliding_window_pads_small_images_up_to_the_crop():
    seen = []

    def fn(images):
        seen.append(images.shape)
        return per_pixel_fn(images)

    x = random_images(1, 7, 9)
    out = inference.predict_logits(fn, x, mode="sliding", crop_size=16).numpy()
    assert seen == [(1, 16, 16, 3)]
    np.testing.assert_allclose(out, per_pixel_np(x), rtol=1e-5, atol=1e-3)


def test_multi_scale_constant_image_recovers_function_exactly():
    # A constant image stays constant under any bilinear resize, so every scale predicts f(x).
    x = np.broadcast_to(np.array([40.0, 200.0, 90.0], np.float32), (1, 21, 19, 3)).copy()
    for kwargs in (
        {"scales": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)},
        {"scales": (0.5, 1.0, 1.75), "flip": True, "average": "probs"},
        {"scales": (0.75, 1.25), "flip": True, "mode": "sliding", "crop_size": 9},
    ):
        out = inference.predict_logits(per_pixel_fn, x, **kwargs).numpy()
        expected = per_pixel_np(x)
        if kwargs.get("average") == "probs":
            out = tf.nn.softmax(out).numpy()
            expected = tf.nn.softmax(expected).numpy()
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-3, err_msg=str(kwargs))


def test_multi_scale_is_the_mean_of_round_tripped_predictions():
    # An affine per-pixel f commutes with bilinear resizing (weights sum to 1), so the multi-scale
    # logits must equal f(mean over scales of the image resized to s and back).
    x = random_images(1, 24, 20, seed=5)
    scales = (0.5, 1.0, 1.5)
    out = inference.predict_logits(per_pixel_fn, x, scales=scales).numpy()
    round_trips = []
    for s in scales:
        small = tf.image.resize(x, (int(round(24 * s)), int(round(20 * s))), method="bilinear")
        round_trips.append(tf.image.resize(small, (24, 20), method="bilinear").numpy())
    np.testing.assert_allclose(out, per_pixel_np(np.mean(round_trips, axis=0)), rtol=1e-4, atol=1e-2)
    # A real difference from single scale, so the check above is not vacuous.
    assert np.abs(out - per_pixel_np(x)).max() > 1.0


def _symmetric_conv_fn(images):
    """3x3 conv with a left-right symmetric kernel: f(flip(x)) == flip(f(x))."""
    k = np.random.default_rng(7).normal(size=(3, 3, 3, C)).astype(np.float32)
    k = (k + k[:, ::-1]) / 2
    return tf.nn.conv2d(images, k, strides=1, padding="SAME")


def test_flip_of_flip_symmetric_input_equals_no_flip():
    half = random_images(1, 12, 8, seed=9)
    x = np.concatenate([half, half[:, :, ::-1]], axis=2)  # mirror-symmetric 12x16
    plain = inference.predict_logits(_symmetric_conv_fn, x).numpy()
    flipped = inference.predict_logits(_symmetric_conv_fn, x, flip=True).numpy()
    np.testing.assert_allclose(flipped, plain, rtol=1e-5, atol=1e-3)


def test_flip_averages_mirrored_prediction_for_non_equivariant_fn():
    x = random_images(1, 6, 10, seed=11)
    out = inference.predict_logits(_window_position_fn, x, flip=True).numpy()
    a = _window_position_fn(tf.constant(x)).numpy()
    b = _window_position_fn(tf.constant(x[:, :, ::-1].copy())).numpy()[:, :, ::-1]
    np.testing.assert_allclose(out, (a + b) / 2, rtol=1e-5, atol=1e-3)
    assert np.abs(out - a).max() > 1.0


def test_probability_averaging():
    x = random_images(1, 6, 10, seed=12)
    out = inference.predict_logits(_window_position_fn, x, flip=True, average="probs").numpy()
    a = tf.nn.softmax(_window_position_fn(tf.constant(x))).numpy()
    b = tf.nn.softmax(_window_position_fn(tf.constant(x[:, :, ::-1].copy()))).numpy()[:, :, ::-1]
    np.testing.assert_allclose(tf.nn.softmax(out).numpy(), (a + b) / 2, rtol=1e-4, atol=1e-5)


def test_tf_function_with_dynamic_shapes_matches_eager():
    kwargs = dict(scales=(0.75, 1.0), flip=True, mode="sliding", crop_size=(12, 12))
    fn = tf.function(
        lambda im: inference.predict_logits(_window_position_fn, im, **kwargs),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    labels = tf.function(
        lambda im: inference.predict_labels(_window_position_fn, im, **kwargs),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    for shape in ((1, 17, 30), (2, 9, 11)):
        x = random_images(*shape, seed=shape[1])
        eager = inference.predict_logits(_window_position_fn, x, **kwargs).numpy()
        np.testing.assert_allclose(fn(tf.constant(x)).numpy(), eager, rtol=1e-5, atol=1e-3)
        got = labels(tf.constant(x)).numpy()
        assert got.dtype == np.int64 and got.shape == shape
        np.testing.assert_array_equal(got, eager.argmax(-1))


def test_tta_config_roundtrip_and_errors():
    cfg = inference.TTAConfig(scales=[0.5, 1], flip=True, mode="sliding", crop_size=513)
    assert cfg.crop_size == (513, 513)
    again = inference.TTAConfig.from_json_dict(cfg.to_json_dict())
    assert again == cfg
    assert "sliding 513x513" in cfg.describe() and "flip" in cfg.describe()
    with pytest.raises(ValueError, match="crop_size"):
        inference.TTAConfig(mode="sliding")
    with pytest.raises(ValueError, match="mode"):
        inference.predict_logits(per_pixel_fn, random_images(1, 4, 4), mode="tiles")
    with pytest.raises(ValueError, match="unknown TTA"):
        inference.TTAConfig.from_json_dict({"scale": [1.0]})
    assert inference.TTAConfig.coerce(None) == inference.TTAConfig()
    assert inference.TTAConfig.coerce(cfg) is cfg
    assert inference.TTAConfig.coerce(cfg.to_json_dict()) == cfg
    with pytest.raises(TypeError, match="tta must be"):
        inference.TTAConfig.coerce("sliding")
