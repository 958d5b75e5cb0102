"""models.layers.atrous_conv2d_same / AtrousConv2D: the per-tap matrix-product atrous convolution equals
TensorFlow's dilated "SAME" convolution, forward and backward, at any size (rates larger than the map
included), and the layer keeps Conv2D's weights and config."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from models.layers import AtrousConv2D, atrous_conv2d_same


def _dilated_reference(x, kernel, rate):
    """TensorFlow's dilated "SAME" convolution written as an undilated one over the kernel with rate - 1 zeros
    between its taps: the same numbers, and differentiable on every CPU (TF's own CPU kernel, used where oneDNN
    is off, has no dilated Conv2DBackpropInput)."""
    k = kernel.shape[0]
    size = (k - 1) * rate + 1
    taps = [[i * rate, j * rate] for i in range(k) for j in range(k)]
    updates = tf.reshape(kernel, (k * k,) + tuple(kernel.shape[2:]))
    dilated = tf.scatter_nd(taps, updates, (size, size) + tuple(kernel.shape[2:]))
    return tf.nn.conv2d(x, dilated, 1, "SAME")


@pytest.mark.parametrize(
    "height,width,rate,kernel_size",
    [
        (21, 21, 18, 3),
        (21, 21, 6, 3),
        (5, 7, 2, 3),
        (3, 3, 12, 3),
        (33, 17, 4, 3),
        (1, 1, 2, 3),
        (9, 11, 2, 5),
    ],
)
def test_equals_dilated_conv_forward_and_gradients(height, width, rate, kernel_size):
    rng = np.random.default_rng(height * 100 + rate)
    x = tf.constant(rng.normal(size=(2, height, width, 5)), tf.float32)
    k = tf.constant(rng.normal(size=(kernel_size, kernel_size, 5, 4)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, k])
        expected = _dilated_reference(x, k, rate)
        got = atrous_conv2d_same(x, k, rate)
        loss_expected = tf.reduce_sum(expected * expected)
        loss_got = tf.reduce_sum(got * got)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    for wrt in (x, k):
        g_expected = tape.gradient(loss_expected, wrt).numpy()
        g_got = tape.gradient(loss_got, wrt).numpy()
        np.testing.assert_allclose(g_got, g_expected, rtol=1e-4, atol=1e-3 * np.abs(g_expected).max())


def test_dynamic_shapes_in_a_traced_function():
    k = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 3, 2)), tf.float32)
    f = tf.function(
        lambda t: atrous_conv2d_same(t, k, 4), input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    for shape in [(1, 7, 9, 3), (3, 2, 30, 3)]:
        x = tf.random.stateless_normal(shape, seed=(1, 2))
        np.testing.assert_allclose(
            f(x).numpy(), tf.nn.conv2d(x, k, 1, "SAME", dilations=4).numpy(), rtol=1e-4, atol=1e-4
        )


def test_layer_is_a_conv2d_with_the_same_weights_and_config():
    stock = keras.layers.Conv2D(6, 3, padding="same", dilation_rate=3, use_bias=False, name="c")
    atrous = AtrousConv2D(6, 3, padding="same", dilation_rate=3, use_bias=False, name="c")
    x = tf.random.stateless_uniform((2, 10, 13, 4), seed=(3, 4))
    stock(x), atrous(x)
    atrous.set_weights(stock.get_weights())
    assert [w.name for w in atrous.weights] == [w.name for w in stock.weights]
    np.testing.assert_allclose(atrous(x).numpy(), stock(x).numpy(), rtol=1e-4, atol=1e-4)
    assert atrous.get_config() == stock.get_config()
    # Settings the per-tap path does not cover run the stock convolution.
    strided = AtrousConv2D(6, 3, strides=2, padding="same")
    assert strided(x).shape == (2, 5, 7, 6)


def test_atrous_impl_taps_and_stock_give_the_same_outputs_and_gradients():
    """`atrous_impl` only changes the kernels: per-tap matrix products ("taps", the CPU choice of auto) and the
    stock dilated convolution ("stock", the GPU/TPU choice) give the same outputs and gradients."""
    from models.aspp import ASPP
    from models.layers import atrous_impl_of, set_atrous_impl

    aspp = ASPP(rates=(2, 5), filters=6, image_pooling=True)
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 9, 11, 5)), tf.float32)
    aspp(x)  # build
    results = {}
    for impl in ("taps", "stock"):
        assert set_atrous_impl(aspp, impl) == 5  # every branch's conv, image pooling's and the projection's
        assert atrous_impl_of(aspp) == impl
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = aspp(x, training=False)
            loss = tf.reduce_sum(y * y)
        grads = tape.gradient(loss, [x, *aspp.trainable_weights])
        results[impl] = (y.numpy(), [g.numpy() for g in grads])
    (y_taps, g_taps), (y_stock, g_stock) = results["taps"], results["stock"]
    np.testing.assert_allclose(y_taps, y_stock, rtol=1e-4, atol=1e-4)
    assert len(g_taps) == len(g_stock) == 1 + len(aspp.trainable_weights)
    for a, b in zip(g_taps, g_stock):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * max(np.abs(b).max(), 1e-6))


def test_atrous_impl_auto_follows_the_device_and_reaches_the_model():
    from models import hparams as hparams_lib
    from models import model_io
    from models.layers import atrous_impl_of
    from models.precision import resolve_atrous_impl

    assert resolve_atrous_impl("auto", devices=[])[0] == "taps"
    assert resolve_atrous_impl("auto", devices=["/physical_device:GPU:0"])[0] == "stock"
    assert resolve_atrous_impl("auto", devices=["/physical_device:TPU:0"])[0] == "stock"
    assert resolve_atrous_impl("stock", devices=[]) == ("stock", "requested")
    with pytest.raises(ValueError, match="atrous_impl"):
        resolve_atrous_impl("fast")
    with pytest.raises(ValueError, match="atrous_impl"):
        hparams_lib.preset("demo", atrous_impl="fast")
    config = dict(backbone="mobilenet_v2", alpha=0.35, output_stride=8, aspp_filters=8)
    assert atrous_impl_of(model_io.build_model(config, atrous_impl="stock")) == "stock"
    assert atrous_impl_of(model_io.build_model(config)) == resolve_atrous_impl("auto")[0]
    assert hparams_lib.preset("demo").build_options()["atrous_impl"] == "auto"
