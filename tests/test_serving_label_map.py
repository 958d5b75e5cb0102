"""The served label map (issue 11): GrpcClient.label_map() / RestClient.label_map() read the export's `label_map`
signature from the local server, and `deeplab predict` names classes and colours PNGs with it."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from data.label_map import LabelMap
from models import export, model_io
from serving.grpc_client import GrpcClient
from serving.rest_client import RestClient, ServingClientError
from serving.server import ModelServer

TINY = {"backbone": "mobilenet_v2", "alpha": 0.35, "aspp_filters": 8, "output_stride": 16, "num_classes": 5}
SHAPES = LabelMap(
    names=("background", "disc", "square", "triangle", "ring"),
    palette=(((0, 0, 0), 0), ((200, 30, 30), 1), ((30, 200, 30), 2), ((30, 30, 200), 3), ((250, 250, 10), 4)),
    ignore_label=255,
    name="shapes",
)
COLORS = [[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200], [250, 250, 10]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny 5-class DeepLab V3 with the 'shapes' label map, version 1 of model 'deeplab'."""
    import tf_keras as keras

    from models.config import ModelConfig
    from models.deeplab import build_deeplab_v3

    keras.utils.set_random_seed(0)
    model = model_io.randomize_weights(build_deeplab_v3(ModelConfig(**TINY)), seed=0)
    base = tmp_path_factory.mktemp("serving") / "deeplab"
    export.export_serving_model(model, str(base / "1"), hparams={"model": TINY}, warmup_sizes=(), label_map=SHAPES)
    return str(base)


@pytest.fixture(scope="module")
def local_server(exported):
    server = ModelServer(exported, "deeplab", grpc_port=0, rest_port=0, poll_seconds=0, threads=4).start()
    yield server
    server.stop()


def _check(label_map):
    assert label_map.names == SHAPES.names
    assert label_map.num_classes == 5 and label_map.ignore_label == 255
    assert label_map.colors()[:5].tolist() == COLORS


def test_clients_read_the_served_label_map(local_server):
    with GrpcClient(f"127.0.0.1:{local_server.grpc_port}") as client:
        _check(client.label_map())
    _check(RestClient(f"127.0.0.1:{local_server.rest_port}").label_map())


def test_model_without_label_map_signature_falls_back_to_voc(monkeypatch, caplog):
    def missing(*args, **kwargs):
        raise ServingClientError(
            "FAILED_PRECONDITION", 'Serving signature key "label_map" not found. This model has: serving_default'
        )

    rest = RestClient("127.0.0.1:1")
    monkeypatch.setattr(rest, "predict", missing)
    with caplog.at_level(logging.WARNING):
        assert rest.label_map() == LabelMap.voc()
    assert "no label_map signature" in caplog.text
    with GrpcClient("127.0.0.1:1") as client:
        monkeypatch.setattr(client, "predict", missing)
        assert client.label_map() == LabelMap.voc()

    def refused(*args, **kwargs):  # any other failure is the caller's to see
        raise ServingClientError("UNAVAILABLE", "cannot reach the server")

    monkeypatch.setattr(rest, "predict", refused)
    with pytest.raises(ServingClientError):
        rest.label_map()


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_deeplab_predict_uses_the_served_label_map(local_server, tmp_path, rest):
    import runner

    image = tmp_path / "shapes.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    port = local_server.rest_port if rest else local_server.grpc_port
    argv = ["predict", "--server", f"127.0.0.1:{port}", "--image", str(image), "--out", str(out)]
    assert runner.main(argv + (["--rest"] if rest else [])) == 0
    written = json.loads((out / "predictions.json").read_text())
    assert written["label_map"]["class_names"] == list(SHAPES.names)
    assert written["label_map"]["class_colors"] == COLORS
    assert written["label_map"]["ignore_label"] == 255
    shares = written["images"][0]["class_share"]
    assert shares and set(shares) <= set(SHAPES.names)
    assert abs(sum(shares.values()) - 1.0) < 1e-3
    with Image.open(out / "shapes_labels.png") as labels:
        assert labels.mode == "P"
        palette = np.array(labels.getpalette()[: 5 * 3]).reshape(5, 3).tolist()
        ids = np.asarray(labels)
    assert palette == COLORS
    assert set(np.unique(ids).tolist()) == {SHAPES.names.index(n) for n in shares}
    assert (out / "shapes_overlay.png").is_file()
