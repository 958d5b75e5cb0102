"""`deeplab serve` (serving/server), the gRPC and REST clients and `deeplab predict`.

Client tests run against the local server and, where `tensorflow_model_server` is on PATH
(marker serving_binary), against the real TF Serving binary over the same model directory.
"""

import base64
import concurrent.futures
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

import numpy as np
import pytest
import tensorflow as tf

from data.synthetic import encode_jpeg, render_sample
from models import export, model_io
from serving.grpc_client import GrpcClient
from serving.rest_client import RestClient, ServingClientError
from serving.server import ModelServer
from serving.server.image_limits import ImageHeaderError, check_image, image_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"backbone": "mobilenet_v2", "alpha": 0.35, "aspp_filters": 16, "output_stride": 16}
MAX_MESSAGE_MB = 1


def _png(image):
    return tf.io.encode_png(image).numpy()


def _images(n=4, seed=1):
    rng = np.random.default_rng(seed)
    sizes = [(32, 40), (24, 48), (40, 32), (32, 40)]
    return [render_sample(rng, *sizes[i % len(sizes)])[0] for i in range(n)]


def bomb_png(height=50000, width=50000):
    """A ~100-byte PNG declaring height x width RGB pixels (7.5 GB decoded)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny DeepLab V3 exported as version 1 of model 'deeplab' under a TF Serving base path."""
    import tf_keras as keras

    from models.config import ModelConfig
    from models.deeplab import build_deeplab_v3

    keras.utils.set_random_seed(0)
    model = model_io.randomize_weights(build_deeplab_v3(ModelConfig(**TINY)), seed=0)
    base = tmp_path_factory.mktemp("serving") / "deeplab"
    path = str(base / "1")
    export.export_serving_model(model, path, hparams={"model": TINY}, tta={"flip": True}, warmup_sizes=[(32, 40)])
    return str(base), path


@pytest.fixture(scope="module")
def in_process(exported):
    loaded = tf.saved_model.load(exported[1])

    def segment(image):
        out = loaded.signatures["serving_default"](images=tf.constant([_png(image)]))
        return out["segmentation_map"].numpy()[0], out["confidence"].numpy()[0]

    return segment


@pytest.fixture(scope="module")
def local_server(exported):
    server = ModelServer(
        exported[0],
        "deeplab",
        grpc_port=0,
        rest_port=0,
        poll_seconds=0,
        max_message_mb=MAX_MESSAGE_MB,
        threads=8,
        version_labels={"stable": 1},
    ).start()
    yield server
    server.stop()


def _start_binary(base):
    binary = shutil.which("tensorflow_model_server")
    if binary is None:
        pytest.skip("tensorflow_model_server is not on PATH")
    grpc_port, rest_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--model_name=deeplab",
            f"--model_base_path={base}",
            "--enable_model_warmup=true",
            "--grpc_max_threads=8",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = GrpcClient(f"127.0.0.1:{grpc_port}", timeout=5, retries=0)
    deadline = time.time() + 120
    while True:
        try:
            if any(state == "AVAILABLE" for _, state, _, _ in client.status()):
                break
        except ServingClientError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("tensorflow_model_server did not make the model AVAILABLE within 120 s")
        time.sleep(1)
    client.close()
    return proc, grpc_port, rest_port


@pytest.fixture(
    scope="module", params=["deeplab-serve", pytest.param("tensorflow_model_server", marks=pytest.mark.serving_binary)]
)
def endpoint(request, exported):
    """(grpc target, rest target) of a running server over the exported model."""
    if request.param == "deeplab-serve":
        server = request.getfixturevalue("local_server")
        yield f"127.0.0.1:{server.grpc_port}", f"127.0.0.1:{server.rest_port}"
        return
    proc, grpc_port, rest_port = _start_binary(exported[0])
    try:
        yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{rest_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# image header limits (no server)


def test_image_size_reads_headers_of_every_decodable_format():
    import io

    from PIL import Image

    image = Image.fromarray(_images(1)[0])  # 32x40
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        assert image_size(buf.getvalue())[1:] == (32, 40), fmt
    progressive = io.BytesIO()
    image.save(progressive, format="JPEG", progressive=True)
    assert image_size(progressive.getvalue()) == ("jpeg", 32, 40)
    assert image_size(bomb_png()) == ("png", 50000, 50000)
    with pytest.raises(ImageHeaderError, match="declares 50000x50000 pixels, over the server's limit"):
        check_image(bomb_png(), max_pixels=4096 * 4096, max_side=8192)
    with pytest.raises(ImageHeaderError, match="not a JPEG, PNG, GIF or BMP"):
        image_size(b"hello")
    with pytest.raises(ImageHeaderError, match="truncated"):
        image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF")


# ---------------------------------------------------------------------------------------------
# clients against a server (local, and the real binary where installed)


def test_grpc_and_rest_maps_equal_the_savedmodel_in_process(endpoint, in_process):
    grpc_target, rest_target = endpoint
    images = _images(3)
    encoded = [_png(image) for image in images]
    with GrpcClient(grpc_target, timeout=30) as client:
        via_grpc = client.segment(encoded, batch_size=3, confidence=True)  # PNG map + confidence
        compact = client.segment(encoded, batch_size=2)  # the default: PNG map only
        full = client.segment(encoded, batch_size=3, compact=False)  # every output, int64 map
    rest = RestClient(rest_target, timeout=30)
    via_rows = rest.segment(encoded, batch_size=2)  # the default: serving_png
    via_columns = rest.segment(encoded, batch_size=3, columnar=True, compact=False)  # serving_default
    for image, g, k, f, r, c in zip(images, via_grpc, compact, full, via_rows, via_columns):
        want_map, want_conf = in_process(image)
        assert g[0].shape == image.shape[:2]
        for label_map, _ in (g, k, f, r, c):
            assert label_map.dtype == np.int64
            np.testing.assert_array_equal(label_map, want_map)
        for confidence in (g[1], f[1], c[1]):
            np.testing.assert_allclose(confidence, want_conf, atol=1e-6)
        assert k[1] is None and r[1] is None  # not asked for: not sent
    assert len({m.tobytes() for m, _ in via_grpc}) > 1  # different images, different maps


def test_compact_output_is_a_fraction_of_the_int64_map_on_the_wire(endpoint):
    from tensorflow_serving.apis import predict_pb2

    grpc_target, _ = endpoint
    image = _images(1, seed=4)[0]
    with GrpcClient(grpc_target) as client:
        sizes = {}
        for name, output_filter in (("full", []), ("compact", ["segmentation_png", "height", "width"])):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "deeplab"
            request.inputs["images"].CopyFrom(tf.make_tensor_proto([_png(image)]))
            request.output_filter.extend(output_filter)
            sizes[name] = client.predictions.Predict(request, 30.0).ByteSize()
    # int64 map (int64_val varints: ~1 B/px, as TF Serving sends it) + float32 confidence (4 B/px) vs one small PNG
    assert sizes["full"] > 5 * image.shape[0] * image.shape[1]
    assert sizes["compact"] * 10 < sizes["full"], sizes


def test_concurrent_requests_are_merged_into_fewer_model_runs(local_server, in_process):
    """`deeplab serve` batches serving_default by default: concurrent clients share model runs,
    each gets its own map (also when the merged images have other sizes than its own)."""
    queue = local_server.manager.get("deeplab").batching_queue("serving_default")
    assert queue is not None
    images = _images(4, seed=9)
    expected = [in_process(image)[0] for image in images]
    encoded = [_png(image) for image in images]
    before = dict(requests=queue.stats["requests"], runs=queue.stats["runs"], merged=queue.stats["merged_runs"])
    clients = [GrpcClient(f"127.0.0.1:{local_server.grpc_port}", timeout=60, retries=0) for _ in range(8)]
    start = threading.Barrier(8)

    def one(k):
        start.wait()
        out = []
        for i in range(6):
            j = (k + i) % 4
            out.append(np.array_equal(clients[k].segment([encoded[j]])[0][0], expected[j]))
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    for client in clients:
        client.close()
    assert all(all(r) for r in results)
    requests = queue.stats["requests"] - before["requests"]
    runs = queue.stats["runs"] - before["runs"]
    assert requests == 48
    assert runs < requests and queue.stats["merged_runs"] > before["merged"], queue.stats


def test_predict_images_the_reference_way(endpoint, in_process):
    grpc_target, rest_target = endpoint
    image = _images(1)[0]
    want, _ = in_process(image)
    with GrpcClient(grpc_target) as client:
        # The reference notebook reads outputs['segmentation_map'].int64_val and tensor_shape.dim[1..2].
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "deeplab"
        request.model_spec.signature_name = "predict_images"
        height, width = image.shape[:2]
        request.inputs["images"].CopyFrom(
            tf.make_tensor_proto(image.astype(dtype=np.float32), shape=[1, height, width, 3])
        )
        request.inputs["height"].CopyFrom(tf.make_tensor_proto(height, shape=[1]))
        request.inputs["width"].CopyFrom(tf.make_tensor_proto(width, shape=[1]))
        result = client.predictions.Predict(request, 30.0)
        output = np.array(result.outputs["segmentation_map"].int64_val)
        h = result.outputs["segmentation_map"].tensor_shape.dim[1].size
        w = result.outputs["segmentation_map"].tensor_shape.dim[2].size
        np.testing.assert_array_equal(np.reshape(output, (h, w)), want)
        np.testing.assert_array_equal(client.predict_images(image), want)
    np.testing.assert_array_equal(RestClient(rest_target).predict_images(image), want)


def test_status_and_metadata(endpoint):
    grpc_target, rest_target = endpoint
    with GrpcClient(grpc_target) as client:
        assert client.status() == [(1, "AVAILABLE", "OK", "")]
        signatures = client.signatures()
        assert set(export.SIGNATURES) <= set(signatures)
        images = signatures["serving_default"].inputs["images"]
        assert tf.dtypes.as_dtype(images.dtype) == tf.string
    rest = RestClient(rest_target)
    assert rest.status() == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    metadata = rest.metadata()
    assert metadata["predict_images"]["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert metadata["serving_default"]["outputs"]["segmentation_map"]["dtype"] == "DT_INT64"
    with urllib.request.urlopen(f"http://{rest_target}/v1/models/deeplab/metadata") as r:
        body = json.loads(r.read())
    assert body["model_spec"] == {"name": "deeplab", "signature_name": "", "version": "1"}


# ---------------------------------------------------------------------------------------------
# local server only: refusals, load, warm-up, hot versions, the CLI


def test_warmup_requests_were_replayed_at_load(local_server):
    servable = local_server.manager.get("deeplab")
    assert servable.warmup_replayed == 2  # serving_default + predict_images at 32x40


def test_version_labels(local_server, in_process):
    image = _images(1)[0]
    want = in_process(image)[0]
    with GrpcClient(f"127.0.0.1:{local_server.grpc_port}", version_label="stable") as client:
        np.testing.assert_array_equal(client.segment([_png(image)])[0][0], want)
    rest = RestClient(f"127.0.0.1:{local_server.rest_port}", version_label="stable")
    np.testing.assert_array_equal(rest.segment([_png(image)])[0][0], want)
    assert rest.status()[0]["version"] == "1"
    with GrpcClient(f"127.0.0.1:{local_server.grpc_port}", version_label="canary", retries=0) as client:
        error = _grpc_error(lambda: client.segment([_png(image)]))
    assert (error.code, error.details) == ("INVALID_ARGUMENT", "Unrecognized servable version label: canary")


def _grpc_error(call):
    with pytest.raises(ServingClientError) as info:
        call()
    return info.value


def test_bad_grpc_requests_are_refused_and_the_server_keeps_serving(local_server, in_process):
    target = f"127.0.0.1:{local_server.grpc_port}"
    image = _images(1)[0]
    client = GrpcClient(target, timeout=30, retries=0)
    other = GrpcClient(target, model_name="nope", retries=0)
    v7 = GrpcClient(target, version=7, retries=0)
    cases = [
        (lambda: client.predict({"images": np.zeros([1], np.float32)}), "INVALID_ARGUMENT", "expects string but float"),
        (
            lambda: client.predict({"images": np.array([[b"x"]], object)}),
            "INVALID_ARGUMENT",
            "expects shape [?] but got [1, 1]",
        ),
        (lambda: client.segment([b"this is not an image"]), "INVALID_ARGUMENT", "not a JPEG, PNG, GIF or BMP"),
        (lambda: client.segment([_png(image)[:60]]), "INVALID_ARGUMENT", "Invalid PNG data"),  # decoder's word
        (lambda: client.segment([bomb_png()]), "INVALID_ARGUMENT", "declares 50000x50000 pixels"),
        (
            lambda: client.predict({"images": np.array([_png(image)], object), "extra": np.zeros(1)}),
            "INVALID_ARGUMENT",
            "Send extra: {extra}",
        ),
        (
            lambda: client.predict({"pixels": np.zeros([1], np.float32)}, "predict_images"),
            "INVALID_ARGUMENT",
            "Missing but required: {height, images, width}",
        ),
        (
            lambda: client.predict({"images": np.array([b"x"], object)}, "no_such_signature"),
            "FAILED_PRECONDITION",
            'Serving signature key "no_such_signature" not found',
        ),
        (lambda: other.segment([_png(image)]), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        (lambda: v7.segment([_png(image)]), "NOT_FOUND", "Specific(deeplab, 7)"),
        (lambda: v7.status(), "NOT_FOUND", "Could not find version 7 of model deeplab"),
        (
            lambda: client.segment([b"\x89PNG" + bytes(int(1.5 * MAX_MESSAGE_MB * (1 << 20)))]),
            "RESOURCE_EXHAUSTED",
            "larger than max",
        ),
        (
            lambda: client.predict(
                {
                    "images": np.zeros([1, 8, 8, 3], np.float32),
                    "height": np.array([9], np.int32),
                    "width": np.array([8], np.int32),
                },
                "predict_images",
            ),
            "INVALID_ARGUMENT",
            "height and width inputs must equal",
        ),
    ]
    for call, code, text in cases:
        error = _grpc_error(call)
        assert error.code == code, (text, error)
        assert text in error.details, error
    from tensorflow_serving.apis import classification_pb2

    with pytest.raises(Exception, match="UNIMPLEMENTED"):
        client.predictions.Classify(classification_pb2.ClassificationRequest(), timeout=10)
    # Still serving, correctly.
    np.testing.assert_array_equal(client.segment([_png(image)])[0][0], in_process(image)[0])
    for c in (client, other, v7):
        c.close()


def _http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_rest_requests_get_tf_serving_status_codes_and_error_json(local_server, in_process):
    base = f"http://127.0.0.1:{local_server.rest_port}/v1/models"
    image = _images(1)[0]
    b64 = {"b64": base64.b64encode(_png(image)).decode()}
    bomb = {"b64": base64.b64encode(bomb_png()).decode()}
    predict = lambda payload: _http("POST", f"{base}/deeplab:predict", json.dumps(payload).encode())  # noqa: E731
    cases = [
        (predict({"instances": [1.5]}), 400, "expects strings"),
        (predict({"instances": [{"b64": base64.b64encode(b"not an image").decode()}]}), 400, "not a JPEG, PNG"),
        (predict({"instances": [bomb]}), 400, "declares 50000x50000 pixels"),
        (predict({"instances": [{"b64": "@@@"}]}), 400, "not valid base64"),
        (
            predict(
                {
                    "signature_name": "predict_images",
                    "inputs": {"images": [[[[1, 2, 3]]]], "height": [1.5], "width": [1]},
                }
            ),
            400,
            "non-integer",
        ),
        (predict({"signature_name": "predict_images", "instances": [[[1, 2, 3]]]}), 400, "naming the signature inputs"),
        (predict({"signature_name": "nope", "instances": [b64]}), 400, 'Serving signature key "nope" not found'),
        (predict({"instances": [b64], "inputs": [b64]}), 400, "exactly one of 'instances'"),
        (_http("POST", f"{base}/deeplab:predict", b"{not json"), 400, "JSON Parse error"),
        (
            _http("POST", f"{base}/nope:predict", json.dumps({"instances": [b64]}).encode()),
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            _http("POST", f"{base}/deeplab/versions/7:predict", json.dumps({"instances": [b64]}).encode()),
            404,
            "Specific(deeplab, 7)",
        ),
        (_http("POST", f"{base}/deeplab:classify", json.dumps({"examples": []}).encode()), 501, "not implemented"),
        (_http("POST", f"{base}/deeplab:explode", b"{}"), 400, "Malformed request"),
        (_http("GET", f"{base}/nope"), 404, "Could not find any versions of model nope"),
        (_http("GET", f"{base}/deeplab/versions/7"), 404, "Could not find version 7 of model deeplab"),
        (
            _http("POST", f"{base}/deeplab:predict", b"x" * int(1.5 * MAX_MESSAGE_MB * (1 << 20))),
            413,
            "larger than the server's limit",
        ),
    ]
    for (status, body), want_status, text in cases:
        assert set(body) == {"error"}, body
        assert status == want_status, (text, status, body)
        assert text in body["error"], (text, body)
    status, body = predict({"instances": [b64]})
    assert status == 200
    np.testing.assert_array_equal(np.array(body["predictions"][0]["segmentation_map"]), in_process(image)[0])


def test_load_400_requests_8_threads_10_percent_malformed(local_server, in_process):
    images = _images(4, seed=3)
    encoded = [_png(image) for image in images]
    expected = [in_process(image)[0] for image in images]
    grpc_client = GrpcClient(f"127.0.0.1:{local_server.grpc_port}", timeout=60, retries=0)
    rest_client = RestClient(f"127.0.0.1:{local_server.rest_port}", timeout=60, retries=0)
    malformed = [b"garbage bytes", bomb_png(), _png(images[0])[:40]]

    def one(i):
        client = grpc_client if i % 2 else rest_client
        if i % 10 == 3:  # 10% malformed
            try:
                client.segment([malformed[(i // 10) % len(malformed)]])
            except ServingClientError as e:
                return "refused" if e.code == "INVALID_ARGUMENT" else f"wrong code {e.code}"
            return "accepted a malformed request"
        label_map, _ = client.segment([encoded[i % 4]])[0]
        return "ok" if np.array_equal(label_map, expected[i % 4]) else "wrong map"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(400)))
    grpc_client.close()
    assert results.count("refused") == 40
    assert results.count("ok") == 360, {r: results.count(r) for r in set(results)}
    assert local_server.manager.status("deeplab")[0][1] == "AVAILABLE"


def test_new_version_is_served_without_restart(exported, tmp_path):
    from components.atomic_pusher.executor import publish_atomically

    base = str(tmp_path / "deeplab")
    publish_atomically(exported[1], base, 1)
    image = _images(1)[0]
    with ModelServer(base, grpc_port=0, rest_port=0, poll_seconds=0.2) as server:
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}", timeout=30)
        assert client.status()[0][:2] == (1, "AVAILABLE")
        publish_atomically(exported[1], base, 2)
        deadline = time.time() + 120
        while client.status()[0][:2] != (2, "AVAILABLE"):
            assert time.time() < deadline, client.status()
            time.sleep(0.2)
        request_version = client.predictions.Predict  # response carries the version that answered
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "deeplab"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto([_png(image)]))
        assert request_version(request, 30).model_spec.version.value == 2
        assert client.status() == [(2, "AVAILABLE", "OK", ""), (1, "END", "OK", "")]
        old = GrpcClient(f"127.0.0.1:{server.grpc_port}", version=1, retries=0)
        assert _grpc_error(lambda: old.segment([_png(image)])).code == "NOT_FOUND"
        old.close()
        client.close()


def test_deeplab_serve_and_deeplab_predict(exported, in_process, tmp_path):
    from PIL import Image

    import runner

    images = _images(2, seed=5)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(encode_jpeg(image, quality=95))
        paths.append(str(path))
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(REPO, "runner.py"),
            "serve",
            "--model-base-path",
            exported[0],
            "--grpc-port",
            "0",
            "--rest-port",
            "0",
            "--poll-seconds",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ports = {}
        reader = threading.Thread(target=lambda: ports.update(json.loads(proc.stdout.readline() or "{}")))
        reader.start()
        reader.join(timeout=240)
        assert ports.get("grpc_port"), "deeplab serve did not report its ports within 240 s"
        for api, server in (("grpc", f"127.0.0.1:{ports['grpc_port']}"), ("rest", f"127.0.0.1:{ports['rest_port']}")):
            out = tmp_path / api
            argv = ["predict", "--server", server, "--image", *paths, "--out", str(out)] + (
                ["--rest"] if api == "rest" else []
            )
            assert runner.main(argv) == 0
            report = json.loads((out / "predictions.json").read_text())
            assert report["api"] == api and len(report["images"]) == 2
            for path, entry in zip(paths, report["images"]):
                decoded = tf.io.decode_jpeg(open(path, "rb").read(), dct_method="INTEGER_ACCURATE").numpy()
                want, _ = in_process(decoded)  # the server decodes the JPEG bytes we sent
                got = np.array(Image.open(entry["labels_png"]))
                np.testing.assert_array_equal(got, want)
                assert Image.open(entry["labels_png"]).mode == "P"
                assert Image.open(entry["overlay_png"]).size == (decoded.shape[1], decoded.shape[0])
                assert abs(sum(entry["class_share"].values()) - 1.0) < 1e-3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_grpc_over_tls_with_a_root_certificate(exported, in_process, tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    image = _images(1)[0]
    with ModelServer(
        exported[0],
        grpc_port=0,
        rest_port=None,
        poll_seconds=0,
        warmup=False,
        ssl_cert=str(cert_pem),
        ssl_key=str(key_pem),
    ) as server:
        with GrpcClient(f"localhost:{server.grpc_port}", root_cert=str(cert_pem), timeout=30) as client:
            np.testing.assert_array_equal(client.segment([_png(image)])[0][0], in_process(image)[0])
        with GrpcClient(f"localhost:{server.grpc_port}", timeout=5, retries=1, backoff=0.1) as plain:
            assert _grpc_error(lambda: plain.status()).code == "UNAVAILABLE"
