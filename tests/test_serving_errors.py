"""`deeplab serve` answers every request, also when something inside it fails unexpectedly.

A servable made to raise (the model call, the status lookup, the version lookup) must give REST a
500 `{"error": ...}` and gRPC INTERNAL, each naming a request id that is in the server log with the
traceback; the same request sent again must get the answer it got before the failure. The server
and tiny model are test_serving's (their correctness against the SavedModel is tested there).
"""

import base64
import json
import logging
import re

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, model_management_pb2

from serving.grpc_client import GrpcClient
from tests.test_serving import _http, _images, _png, exported, local_server  # noqa: F401  (fixtures)

REQUEST_ID = re.compile(r"request id ([0-9a-f]{12})")


def _boom(*args, **kwargs):
    raise RuntimeError("boom: injected by the test")


# What to break for each route: the model call itself (batched serving_default and unbatched
# predict_images take different paths to the front end), the status table, the version lookup.
def _break_model(server, mp):
    mp.setattr(server.manager.get("deeplab"), "_run", _boom)


def _break_status(server, mp):
    mp.setattr(server.manager, "status", _boom)


def _break_lookup(server, mp):
    mp.setattr(server.manager, "get", _boom)


def _logged_with_traceback(caplog, request_id):
    records = [r for r in caplog.records if request_id in r.getMessage()]
    assert records, f"request id {request_id} is not in the server log"
    assert any(r.levelno == logging.ERROR and r.exc_info and r.exc_info[0] is RuntimeError for r in records)


def _internal_error_id(message, caplog):
    assert "RuntimeError" in message and "boom" in message, message
    match = REQUEST_ID.search(message)
    assert match, message
    _logged_with_traceback(caplog, match.group(1))
    return match.group(1)


@pytest.fixture(scope="module")
def image():
    return _images(1, seed=7)[0]


def test_rest_unexpected_errors_answer_500_with_a_request_id_and_the_server_keeps_serving(local_server, image, caplog):
    base = f"http://127.0.0.1:{local_server.rest_port}/v1/models/deeplab"
    b64 = {"b64": base64.b64encode(_png(image)).decode()}
    height, width = image.shape[:2]
    by_signature = {"instances": [b64]}
    by_pixels = {
        "signature_name": "predict_images",
        "inputs": {"images": [image.astype(np.float32).tolist()], "height": [height], "width": [width]},
    }
    routes = [
        (_break_model, "POST", ":predict", by_signature),  # batched signature
        (_break_model, "POST", ":predict", by_pixels),  # unbatched signature
        (_break_status, "GET", "", None),
        (_break_lookup, "GET", "/metadata", None),
        (_break_lookup, "POST", ":predict", by_signature),
    ]
    caplog.set_level(logging.ERROR)
    ids = set()
    for breaker, method, route, payload in routes:
        body = json.dumps(payload).encode() if payload is not None else None
        status, before = _http(method, base + route, body)
        assert status == 200, (route, before)
        with pytest.MonkeyPatch.context() as mp:
            breaker(local_server, mp)
            status, error = _http(method, base + route, body)
        assert (status, set(error)) == (500, {"error"}), (route, status, error)
        ids.add(_internal_error_id(error["error"], caplog))
        assert _http(method, base + route, body) == (200, before), route
    assert len(ids) == len(routes)  # one id per failed request
    # Mapped refusals keep their own status.
    assert _http("GET", base.replace("/deeplab", "/nope"))[0] == 404
    assert _http("POST", base + ":predict", b"{not json")[0] == 400
    assert _http("POST", base + ":classify", b"{}")[0] == 501


def test_grpc_unexpected_errors_answer_internal_with_a_request_id_and_the_server_keeps_serving(
    local_server, image, caplog
):
    client = GrpcClient(f"127.0.0.1:{local_server.grpc_port}", timeout=30, retries=0)
    calls = [  # each returns a comparable answer
        (_break_model, "Predict serving_default", lambda: client.segment([_png(image)])[0][0].tolist()),
        (_break_model, "Predict predict_images", lambda: client.predict_images(image).tolist()),
        (_break_lookup, "Predict", lambda: client.segment([_png(image)])[0][0].tolist()),
        (_break_lookup, "GetModelMetadata", lambda: {k: v.SerializeToString() for k, v in client.signatures().items()}),
        (_break_status, "GetModelStatus", client.status),
    ]
    caplog.set_level(logging.ERROR)
    ids = set()
    for breaker, name, call in calls:
        before = call()
        with pytest.MonkeyPatch.context() as mp:
            breaker(local_server, mp)
            with pytest.raises(Exception) as info:
                call()
        error = info.value
        assert error.code == grpc.StatusCode.INTERNAL.name, (name, error)
        ids.add(_internal_error_id(error.details, caplog))
        assert call() == before, name
    assert len(ids) == len(calls)
    # Mapped refusals keep their own status, also those the servicer aborts with itself.
    with GrpcClient(f"127.0.0.1:{local_server.grpc_port}", model_name="nope", retries=0) as other:
        with pytest.raises(Exception, match="NOT_FOUND"):
            other.status()
    with pytest.raises(Exception, match="INVALID_ARGUMENT"):
        client.predict({"images": np.zeros([1], np.float32)})
    for stub_call, request in (
        (client.predictions.Classify, classification_pb2.ClassificationRequest()),
        (client.models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub_call(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    client.close()
