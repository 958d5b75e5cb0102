"""models/export.py: TF Serving SavedModel signatures, TTA baked in, warm-up file, re-export."""

import contextlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import encode_palette_png, render_sample
from data.tfrecord import Sample, to_example
from models import export, export_files, model_io
from models.config import ModelConfig
from models.inference import TTAConfig, predict_logits
from tests.helpers import export_random_model

TINY = {"backbone": "mobilenet_v2", "alpha": 0.35, "aspp_filters": 16, "output_stride": 16}
TTA = TTAConfig(scales=(1.0, 0.75), flip=True)


def _images(seed=0, sizes=((40, 56), (32, 48))):
    rng = np.random.default_rng(seed)
    return [render_sample(rng, h, w)[0] for h, w in sizes]


def _png(image):
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def tiny_model():
    import tf_keras as keras

    from models.deeplab import build_deeplab_v3

    keras.utils.set_random_seed(0)
    return model_io.randomize_weights(build_deeplab_v3(ModelConfig(**TINY)), seed=0)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "1")
    export.export_serving_model(tiny_model, path, hparams={"model": TINY, "crop_size": [48, 64]}, tta=TTA)
    return path


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def _in_process(model, image, tta=TTA):
    logits = predict_logits(lambda x: model(x, training=False), image[np.newaxis].astype(np.float32), **tta.kwargs())
    probs = tf.nn.softmax(logits, -1).numpy()[0]
    return probs.argmax(-1), probs.max(-1), np.sort(probs, -1)


def test_signatures_listed_with_dtypes_and_shapes(exported, loaded):
    from tensorflow.python.tools import saved_model_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        saved_model_cli._show_all(exported)  # what `saved_model_cli show --dir DIR --all` prints
    text = out.getvalue()
    for name in export.SIGNATURES:
        assert f"signature_def['{name}']" in text
    assert "dtype: DT_STRING" in text and "dtype: DT_INT64" in text

    sig = {name: f.structured_input_signature[1] for name, f in loaded.signatures.items()}
    outs = {name: f.structured_outputs for name, f in loaded.signatures.items()}
    assert sig["serving_default"]["images"] == tf.TensorSpec([None], tf.string, "images")
    assert {k: (v.dtype, v.shape.as_list()) for k, v in outs["serving_default"].items()} == {
        "segmentation_map": (tf.int64, [None, None, None]),
        "confidence": (tf.float32, [None, None, None]),
        "height": (tf.int32, [None]),
        "width": (tf.int32, [None]),
        "segmentation_png": (tf.string, [None]),
    }
    assert {k: (v.dtype, v.shape.as_list()) for k, v in outs["serving_png"].items()} == {
        "segmentation_png": (tf.string, [None]),
        "height": (tf.int32, [None]),
        "width": (tf.int32, [None]),
    }
    # Batch dimension open, so TF Serving's batching can merge requests along dimension 0.
    assert sig["predict_images"]["images"] == tf.TensorSpec([None, None, None, 3], tf.float32, "images")
    assert sig["predict_images"]["height"].dtype == tf.int32
    assert outs["predict_images"]["segmentation_map"].shape.as_list() == [None, None, None]
    assert sig["serving_examples"]["examples"].dtype == tf.string
    assert outs["logits"]["logits"].shape.as_list() == [None, None, None, 21]
    assert "serving_default: images string [?] -> confidence float32 [?,?,?]" in "\n".join(
        export_files.describe_signatures(exported)
    )


def test_serving_default_equals_in_process_tta(loaded, tiny_model):
    image = _images()[0]
    out = loaded.signatures["serving_default"](images=tf.constant([_png(image)]))
    labels, confidence, sorted_probs = _in_process(tiny_model, image)
    served = out["segmentation_map"].numpy()[0]
    assert out["height"].numpy().tolist() == [40] and out["width"].numpy().tolist() == [56]
    np.testing.assert_allclose(out["confidence"].numpy()[0], confidence, atol=1e-5)
    # Identical maps, except where the top two classes tie to float rounding.
    differ = served != labels
    assert np.all(sorted_probs[..., -1][differ] - sorted_probs[..., -2][differ] < 1e-5)
    assert differ.mean() < 0.001
    # TTA really is baked in: without it the map differs from the served one.
    plain, _, _ = _in_process(tiny_model, image, TTAConfig())
    assert not np.array_equal(plain, served)


def _decode_png_map(data):
    return tf.io.decode_png(data).numpy()[..., 0].astype(np.int64)


def test_mixed_size_batch_equals_one_by_one_and_the_png_output_equals_the_map(loaded):
    """Images of several sizes go through the model grouped by size (one call per size): every map
    equals the one-image answer exactly; segmentation_png holds it at the image's own size."""
    sizes = ((40, 56), (32, 48), (40, 56), (33, 47), (32, 48), (48, 30))
    images = _images(seed=3, sizes=sizes)
    encoded = [_png(im) for im in images]
    out = loaded.signatures["serving_default"](images=tf.constant(encoded))
    maps = out["segmentation_map"].numpy()
    assert maps.shape == (6, 48, 56)
    compact = loaded.signatures["serving_png"](images=tf.constant(encoded))
    assert sorted(compact) == ["height", "segmentation_png", "width"]
    for i, (h, w) in enumerate(sizes):
        single = loaded.signatures["serving_default"](images=tf.constant([encoded[i]]))["segmentation_map"].numpy()[0]
        # Same computation, but a batch of two may round differently from a batch of one in the matmul kernels
        # (seen on an AVX2-only CPU: 1 pixel of 2240 at a near-tie of this random-weight model).
        assert np.mean(maps[i, :h, :w] != single) <= 0.005
        assert np.all(maps[i, h:, :] == 255) and np.all(maps[i, :, w:] == 255)
        for png in (out["segmentation_png"][i], compact["segmentation_png"][i]):
            np.testing.assert_array_equal(_decode_png_map(png), maps[i, :h, :w])
    # ~1 byte/pixel before compression, a few hundred bytes after: far below int64's 8 bytes/pixel.
    assert max(len(p) for p in out["segmentation_png"].numpy()) < 40 * 56


def test_mixed_size_batch_is_padded_with_255(loaded):
    a, b = _images()
    out = loaded.signatures["serving_default"](images=tf.constant([_png(a), _png(b)]))
    maps, conf = out["segmentation_map"].numpy(), out["confidence"].numpy()
    assert maps.shape == (2, 40, 56) and maps.dtype == np.int64
    assert out["height"].numpy().tolist() == [40, 32] and out["width"].numpy().tolist() == [56, 48]
    assert np.all(maps[1, 32:, :] == 255) and np.all(maps[1, :, 48:] == 255)
    assert np.all(conf[1, 32:, :] == 0)
    assert maps[:, :32, :48].max() < 21
    for i, image in enumerate((a, b)):
        single = loaded.signatures["serving_default"](images=tf.constant([_png(image)]))
        h, w = image.shape[:2]
        np.testing.assert_array_equal(single["segmentation_map"].numpy()[0], maps[i, :h, :w])
    empty = loaded.signatures["serving_default"](images=tf.constant([], tf.string))
    assert empty["segmentation_map"].shape == (0, 0, 0) and empty["height"].shape == (0,)
    # Same-size batch: the batched path gives the same maps as one by one.
    same = loaded.signatures["serving_default"](images=tf.constant([_png(a), _png(a)]))["segmentation_map"].numpy()
    np.testing.assert_array_equal(same[0], maps[0])
    np.testing.assert_array_equal(same[1], maps[0])


def test_predict_images_as_the_reference_client_builds_it(loaded):
    image = _images()[0]
    height, width = image.shape[:2]
    # sthalles/deeplab_v3 serving/deeplab_client.ipynb, verbatim apart from tf.contrib.util:
    images = tf.make_tensor_proto(image.astype(dtype=np.float32), shape=[1, height, width, 3])
    h_proto = tf.make_tensor_proto(height, shape=[1])
    w_proto = tf.make_tensor_proto(width, shape=[1])
    out = loaded.signatures["predict_images"](
        images=tf.constant(tf.make_ndarray(images)),
        height=tf.constant(tf.make_ndarray(h_proto)),
        width=tf.constant(tf.make_ndarray(w_proto)),
    )
    reference = loaded.signatures["serving_default"](images=tf.constant([_png(image)]))["segmentation_map"]
    assert out["segmentation_map"].shape == (1, height, width)
    np.testing.assert_array_equal(out["segmentation_map"].numpy(), reference.numpy())
    # Scalars work too; a height that disagrees with the pixels is refused with a clear message.
    scalar = loaded.signatures["predict_images"](
        images=tf.constant(image[None].astype(np.float32)), height=tf.constant(height), width=tf.constant(width)
    )
    np.testing.assert_array_equal(scalar["segmentation_map"].numpy(), reference.numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match="height and width inputs must equal"):
        loaded.signatures["predict_images"](
            images=tf.constant(image[None].astype(np.float32)),
            height=tf.constant([height + 1]),
            width=tf.constant([width]),
        )


def test_predict_images_takes_requests_merged_by_tf_serving_batching(loaded):
    """TF Serving's batching concatenates [1,H,W,3] images and [1] heights/widths of concurrent
    requests along dimension 0: the signature answers the merged [B,...] batch row by row."""
    a, b = _images(seed=5, sizes=((32, 48), (32, 48)))
    merged = np.stack([a, b]).astype(np.float32)
    out = loaded.signatures["predict_images"](
        images=tf.constant(merged), height=tf.constant([32, 32]), width=tf.constant([48, 48])
    )["segmentation_map"].numpy()
    assert out.shape == (2, 32, 48)
    for i, image in enumerate((a, b)):
        alone = loaded.signatures["predict_images"](
            images=tf.constant(image[None].astype(np.float32)), height=tf.constant([32]), width=tf.constant([48])
        )
        np.testing.assert_array_equal(out[i], alone["segmentation_map"].numpy()[0])
    # One value for the whole batch is accepted; a wrong one among B, or a count that is neither 1 nor B, is not.
    one = loaded.signatures["predict_images"](
        images=tf.constant(merged), height=tf.constant([32]), width=tf.constant(48)
    )["segmentation_map"].numpy()
    np.testing.assert_array_equal(one, out)
    with pytest.raises(tf.errors.InvalidArgumentError, match="height and width inputs must equal"):
        loaded.signatures["predict_images"](
            images=tf.constant(merged), height=tf.constant([32, 31]), width=tf.constant([48, 48])
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value, or one per image"):
        loaded.signatures["predict_images"](
            images=tf.constant(merged), height=tf.constant([32, 32, 32]), width=tf.constant([48, 48, 48])
        )


def test_pad_multiple_export_groups_by_padded_size_and_answers_with_tensorflow_alone(tiny_model, tmp_path):
    """With pad_multiple TTA the one-image path pads to k*16+1: images with the same padded size share
    one model call, bit-identical. The export answers in a process that imports TensorFlow only."""
    import subprocess
    import sys
    import textwrap

    path = str(tmp_path / "pad16")
    export.export_serving_model(
        tiny_model, path, hparams={"model": TINY}, tta=TTAConfig(pad_multiple=16, pad_offset=1), warmup_sizes=()
    )
    sizes = [(32, 40), (33, 41), (20, 47), (45, 30)]  # the first two share the 33x49 canvas
    for i, image in enumerate(_images(seed=7, sizes=sizes)):
        (tmp_path / f"{i}.png").write_bytes(_png(image))
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        assert not any(m.split(".")[0] in ("models", "data", "serving") for m in sys.modules)
        sig = tf.saved_model.load({path!r}).signatures
        encoded = [open(f"{{i}}.png", "rb").read() for i in range({len(sizes)})]
        out = sig["serving_default"](images=tf.constant(encoded))
        equal = []
        for i, data in enumerate(encoded):
            h, w = int(out["height"][i]), int(out["width"][i])
            single = sig["serving_default"](images=tf.constant([data]))["segmentation_map"].numpy()[0]
            png = tf.io.decode_png(out["segmentation_png"][i]).numpy()[..., 0]
            batched = out["segmentation_map"].numpy()[i]
            equal.append(bool(np.array_equal(batched[:h, :w], single) and np.array_equal(png, single)
                              and (batched[h:] == 255).all()))
        print(json.dumps(equal))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [True] * len(sizes)


def test_serving_examples_reads_the_ingestion_format(loaded):
    a, b = _images()
    examples = []
    for i, image in enumerate((a, b)):
        sample = Sample(
            image_bytes=_png(image),
            image_format="png",
            mask_png=encode_palette_png(np.zeros(image.shape[:2], np.uint8)),
            height=image.shape[0],
            width=image.shape[1],
            filename=f"img{i}",
            converted=None,
        )
        examples.append(to_example(sample).SerializeToString())
    out = loaded.signatures["serving_examples"](examples=tf.constant(examples))
    ref = loaded.signatures["serving_default"](images=tf.constant([_png(a), _png(b)]))
    for key in ("segmentation_map", "height", "width"):
        np.testing.assert_array_equal(out[key].numpy(), ref[key].numpy())


def test_logits_signature_has_no_tta(loaded, tiny_model):
    x = np.stack(_images(sizes=((32, 48), (32, 48)))).astype(np.float32)
    served = loaded.signatures["logits"](images=tf.constant(x))["logits"].numpy()
    np.testing.assert_allclose(served, tiny_model(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_warmup_file_is_a_prediction_log_tfrecord_that_replays(exported, loaded):
    logs = export_files.read_warmup_file(exported)
    assert [entry.predict_log.request.model_spec.signature_name for entry in logs] == [
        "serving_default",
        "predict_images",
    ]  # one size: the crop_size from hparams
    for entry in logs:
        request = entry.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert out["segmentation_map"].shape[1:] == (48, 64)


def test_export_config_records_hparams_and_refuses_to_overwrite(exported, tiny_model):
    config = export_files.read_export_config(exported)
    assert config["tta"]["scales"] == [1.0, 0.75] and config["tta"]["flip"] is True
    assert config["model_config"]["alpha"] == 0.35 and config["precision"] == "float32"
    assert len(config["weight_names"]) == len(tiny_model.weights)
    with pytest.raises(FileExistsError, match="already holds a SavedModel"):
        export.export_serving_model(tiny_model, exported)


TRAINED = {**TINY, "bn_decay": 0.9}  # moving BN statistics that follow a short training


def _trained_tiny_model(steps=200, batch=8):
    """A TRAINED DeepLab fitted for `steps` Adam steps on synthetic shapes (64x64, 8 batches per epoch): its
    label maps have clear margins, unlike a random model's, whose argmax flips with any rounding.
    Returns (model, first-epoch loss, last-epoch loss)."""
    import tf_keras as keras

    from models.deeplab import build_deeplab_v3
    from models.losses import MaskedSparseCrossEntropy

    rng = np.random.default_rng(0)
    images, labels = zip(*[render_sample(rng, 64, 64) for _ in range(8 * batch)])
    keras.utils.set_random_seed(0)
    model = build_deeplab_v3(ModelConfig(**TRAINED))
    model.compile(keras.optimizers.Adam(0.01), MaskedSparseCrossEntropy())
    history = model.fit(
        np.stack(images).astype(np.float32), np.stack(labels)[..., None], batch_size=batch, epochs=steps // 8, verbose=0
    ).history["loss"]
    return model, history[0], history[-1]


def test_reexport_from_savedmodel_with_other_tta_and_bfloat16(tmp_path):
    """A float32 export re-exported with bfloat16 compute gives the float32 label maps: >= 99% of the pixels
    equal on a trained model, whether this CPU has native bfloat16 (avx512_bf16/amx_bf16, oneDNN) or
    emulates it (e.g. AMD Zen 2, Eigen): raw logits differ by rounding that depends on the CPU."""
    import runner

    model, first_loss, last_loss = _trained_tiny_model()
    assert last_loss < 0.5 * first_loss  # it did learn
    source = export.export_serving_model(
        model, str(tmp_path / "f32"), hparams={"model": TRAINED}, tta=TTA, warmup_sizes=()
    )
    out = str(tmp_path / "bf16")
    assert (
        runner.main(
            [
                "export",
                "--model",
                source,
                "--output",
                out,
                "--scales",
                "1.0",
                "--precision",
                "bfloat16",
                "--warmup-size",
                "32x40",
            ]
        )
        == 0
    )
    config = export_files.read_export_config(out)
    assert config["precision"] == "bfloat16" and config["tta"]["scales"] == [1.0]
    assert config["precision_reason"] == "requested"
    assert config["tta"]["flip"] is True  # not overridden -> kept from the source export
    assert config["source"] == source
    rng = np.random.default_rng(5)
    x = np.stack([render_sample(rng, 64, 96)[0] for _ in range(4)]).astype(np.float32)
    served = tf.saved_model.load(out).signatures["logits"](images=tf.constant(x))["logits"].numpy()
    f32 = model(x, training=False).numpy()
    bf16 = model_io.with_precision(model, "bfloat16", {"model": TRAINED})(x, training=False).numpy()
    assert not np.array_equal(served, f32)  # bf16 arithmetic really is in the served graph
    # Same weights, bf16 arithmetic: the label maps of float32, in-process bf16 and served bf16 agree.
    assert (served.argmax(-1) == f32.argmax(-1)).mean() >= 0.99
    assert (served.argmax(-1) == bf16.argmax(-1)).mean() >= 0.99


def test_load_model_from_keras_file_and_checkpoint(tiny_model, tmp_path):
    x = np.stack(_images(sizes=((32, 48),))).astype(np.float32)
    want = tiny_model(x, training=False).numpy()
    ckpt_dir = tmp_path / "run"  # the Trainer's model_run layout: model.keras + hparams.json
    ckpt_dir.mkdir()
    (ckpt_dir / "hparams.json").write_text(json.dumps({"model": TINY}))
    tiny_model.save(str(ckpt_dir / "model.keras"))
    for path in (str(ckpt_dir / "model.keras"), str(ckpt_dir)):
        model, config, hparams, _ = model_io.load_model(path)
        assert hparams["model"]["alpha"] == 0.35 and config.alpha == 0.35
        np.testing.assert_allclose(model(x, training=False).numpy(), want, atol=1e-5)

    (ckpt_dir / "model.keras").unlink()
    tf.train.Checkpoint(model=tiny_model).write(str(ckpt_dir / "ckpt-1"))
    model, config, hparams, _ = model_io.load_model(str(ckpt_dir / "ckpt-1"))
    assert hparams["model"]["alpha"] == 0.35
    np.testing.assert_allclose(model(x, training=False).numpy(), want, atol=1e-5)


def test_cli_exports_an_untrained_model_of_any_configuration(tmp_path, capsys):
    out = str(tmp_path / "random")
    assert export_random_model(out, "--output-stride", "8") == 0
    printed = capsys.readouterr().out
    assert "predict_images: height int32 <unknown rank>, images float32 [?,?,?,3]" in printed
    config = export_files.read_export_config(out)
    assert config["model_config"] == {
        **ModelConfig().to_dict(),
        "backbone": "mobilenet_v2",
        "output_stride": 8,
        "alpha": 0.35,
        "bn_epsilon": 1e-3,
        "aspp_filters": 8,
    }
    assert not os.path.exists(os.path.join(out, export_files.ASSETS_EXTRA, export_files.WARMUP_FILENAME))
    image = _images()[0]
    served = tf.saved_model.load(out).signatures["serving_default"](images=tf.constant([_png(image)]))
    assert served["segmentation_map"].shape == (1, 40, 56)


def test_v3plus_export_round_trip_answers_with_tensorflow_alone(tmp_path):
    """A DeepLabV3+ export records its decoder, rebuilds as V3+ from deeplab_export.json, and answers (with TTA)
    in a process that imports TensorFlow only, as the in-process model does."""
    import subprocess
    import sys
    import textwrap

    import tf_keras as keras

    from models.deeplab import build_deeplab_v3
    from models.precision import resolve_atrous_impl

    config = {**TINY, "aspp_filters": 8, "decoder": "v3plus"}
    keras.utils.set_random_seed(0)
    model = model_io.randomize_weights(build_deeplab_v3(ModelConfig(**config)), seed=3)
    path = str(tmp_path / "v3plus")
    export.export_serving_model(model, path, hparams={"model": config}, tta=TTA, warmup_sizes=())
    export_config = export_files.read_export_config(path)
    assert export_config["model_config"]["decoder"] == "v3plus"
    assert export_config["atrous_impl"] == resolve_atrous_impl("auto")[0]  # this device's choice, recorded
    reloaded = model_io.load_model(path)
    assert reloaded.config.decoder == "v3plus" and reloaded.model.get_layer("decoder").separable
    images = _images(seed=5, sizes=((40, 56), (33, 47)))
    for image in images:
        x = image[np.newaxis].astype(np.float32)
        np.testing.assert_array_equal(reloaded.model(x, training=False), model(x, training=False))
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(_png(image))
    code = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        assert not any(m.split(".")[0] in ("models", "data", "serving") for m in sys.modules)
        sig = tf.saved_model.load({path!r}).signatures["serving_default"]
        maps = [sig(images=tf.constant([open(f"{{i}}.png", "rb").read()]))["segmentation_map"].numpy()[0].tolist()
                for i in range({len(images)})]
        print(json.dumps(maps))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for image, answer in zip(images, answers):
        labels, _, sorted_probs = _in_process(model, image)
        answer = np.asarray(answer)
        assert answer.shape == image.shape[:2]
        differ = answer != labels  # only where two classes tie to float rounding
        assert differ.mean() < 0.01
        assert np.all(sorted_probs[..., -1][differ] - sorted_probs[..., -2][differ] < 1e-5)
