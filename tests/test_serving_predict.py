"""serving/predict.py: what `deeplab predict` and the demo's last step write, with a stand-in client (no server)."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline import configs
from serving import predict


class _Client:
    def __init__(self, shape=None):
        self.shape = shape

    def segment(self, encoded, batch_size):
        return [(np.ones(self.shape, np.int64), None) for _ in encoded]

    def predict_images(self, image):
        return np.full(image.shape[:2], 15, np.int64)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    "signature, share", [("serving_default", {"aeroplane": 1.0}), ("predict_images", {"person": 1.0})]
)
def test_predict_files_writes_label_maps_overlays_and_predictions_json(tmp_path, monkeypatch, image, signature, share):
    monkeypatch.setattr(predict, "make_client", lambda *a, **k: _Client((6, 8)))
    out = tmp_path / "out"
    assert predict.predict_files("host:1", [image], str(out), signature=signature) == 0
    written = json.load(open(out / predict.PREDICTIONS_FILE))
    assert (written["server"], written["api"], written["model"], written["signature"]) == (
        "host:1",
        "grpc",
        configs.MODEL_NAME,
        signature,
    )
    assert written["images"][0]["class_share"] == share
    assert (out / "cat_labels.png").is_file() and (out / "cat_overlay.png").is_file()


def test_predict_files_exit_codes(tmp_path, monkeypatch, image, capsys):
    monkeypatch.setattr(predict, "make_client", lambda *a, **k: _Client((3, 3)))
    assert predict.predict_files("host:1", [image], str(tmp_path / "out")) == 1  # a map of the wrong size
    assert "server returned a 3x3 (WxH) map" in capsys.readouterr().err
    assert predict.predict_files("host:1", [str(tmp_path / "missing.png")], str(tmp_path / "out")) == 2
    assert "cannot read image" in capsys.readouterr().err
