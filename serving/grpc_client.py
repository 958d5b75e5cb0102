"""gRPC client for TF Serving (real tensorflow_model_server or `deeplab serve`).

    client = GrpcClient("localhost:8500", model_name="deeplab", timeout=10)
    (label_map, _), = client.segment([open("cat.jpg", "rb").read()])  # compact: segmentation_png only
    (label_map, confidence), = client.segment([...], confidence=True)  # + float32 confidence
    client.status()                 # ModelService.GetModelStatus
    client.signatures()             # PredictionService.GetModelMetadata
    client.label_map()              # the model's classes (data.label_map.LabelMap): the `label_map` signature

UNAVAILABLE (server starting, connection dropped) is retried with exponential back-off; every
other failure raises ServingClientError with the server's status code and message.
"""

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from data.label_map import LabelMap
from serving.rest_client import (
    COMPACT_OUTPUTS,
    DEFAULT_MAX_MESSAGE_MB,
    LABEL_MAP_SIGNATURE,
    ServingClient,
    ServingClientError,
    _lacks_compact_output,
    crop_batch,
    fetch_label_map,
)

log = logging.getLogger(__name__)


class GrpcClient(ServingClient):
    def __init__(
        self,
        server: str,
        *args: Any,
        max_message_mb: float = DEFAULT_MAX_MESSAGE_MB,
        root_cert: Optional[str] = None,
        **kwargs: Any,
    ):
        """server: 'host:port'. max_message_mb: largest request/response. root_cert: PEM file of the CA to
        trust -> TLS channel. The other arguments are ServingClient's (model_name, version, timeout, ...)."""
        super().__init__(server, *args, **kwargs)
        size = int(max_message_mb * (1 << 20))
        options = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
        if root_cert:
            with open(root_cert, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            self.channel = grpc.secure_channel(server, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(server, options=options)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill_spec(self, spec, signature=None):
        spec.name = self.model_name
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.version_label:
            spec.version_label = self.version_label
        if signature:
            spec.signature_name = signature

    def _call(self, method, request):
        name = type(request).__name__.replace("Request", "")
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as e:
                details = e.details() or ""
                if "Failed parsing HTTP/2" in details or "http1" in details.lower():  # an HTTP/1 server answered
                    raise ServingClientError(
                        e.code().name,
                        f"{self.server} answered in HTTP/1, not gRPC: this looks like a REST port; use --server "
                        "HOST:8500 for gRPC, or add --rest",
                        f"{self.server} {name}",
                    ) from None
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    delay = self.backoff * 2**attempt
                    log.warning("%s: %s UNAVAILABLE (%s); retrying in %.1f s", self.server, name, e.details(), delay)
                    time.sleep(delay)
                    continue
                raise ServingClientError(e.code().name, e.details(), f"{self.server} {name}") from None

    def predict(
        self, inputs: Mapping[str, Any], signature: str = "serving_default", output_filter: Sequence[str] = ()
    ) -> Dict[str, np.ndarray]:
        """inputs: {alias: ndarray/list/TensorProto} -> {output alias: ndarray}."""
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, signature)
        for alias, value in inputs.items():
            proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
            request.inputs[alias].CopyFrom(proto)
        request.output_filter.extend(output_filter)
        response = self._call(self.predictions.Predict, request)
        return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}

    def segment(
        self, encoded_images: Sequence[bytes], batch_size: int = 8, compact: bool = True, confidence: bool = False
    ) -> List[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """Encoded JPEG/PNG bytes -> [(label_map int64 [h,w], confidence float32 [h,w] or None)] via
        serving_default.

        compact (default): asks for the PNG-encoded `segmentation_png` only (output_filter), a few KB
        per image instead of 2 MB of int64 map per 513x513 image; falls back to the full answer for
        models exported without it. confidence=True adds the float32 confidence (4 bytes/pixel).
        compact=False: every output, the label map from the int64 `segmentation_map`."""
        results = []
        for start in range(0, len(encoded_images), batch_size):
            batch = np.array(list(encoded_images[start : start + batch_size]), dtype=object)
            wanted = ()
            if compact and not self._no_compact:
                wanted = COMPACT_OUTPUTS + (("confidence",) if confidence else ())
            try:
                outputs = self.predict({"images": batch}, "serving_default", output_filter=wanted)
            except ServingClientError as e:
                if not wanted or not _lacks_compact_output(e):
                    raise
                log.info("%s: the model has no segmentation_png output; asking for every output", self.server)
                self._no_compact = True
                outputs = self.predict({"images": batch}, "serving_default")
            if compact and not confidence:  # the fallback's full answer: keep to what was asked
                outputs.pop("confidence", None)
            results.extend(crop_batch(outputs))
        return results

    def predict_images(self, image: np.ndarray) -> np.ndarray:
        """The reference repo's signature, sent the way its client sends it: float32 [1,H,W,3] image,
        height and width as int32 [1]. Returns the label map int64 [H,W]."""
        image = np.asarray(image)
        h, w = image.shape[:2]
        out = self.predict(
            {
                "images": tf.make_tensor_proto(image.astype(np.float32), shape=[1, h, w, 3]),
                "height": tf.make_tensor_proto(h, shape=[1]),
                "width": tf.make_tensor_proto(w, shape=[1]),
            },
            "predict_images",
        )
        return out["segmentation_map"][0]

    def label_map(self) -> LabelMap:
        """The served model's classes as a data.label_map.LabelMap (names, display colours, ignore label), from
        its `label_map` signature; VOC's (with a warning) for a model exported without one."""
        return fetch_label_map(
            lambda: self.predict({"index": np.array([0], np.int32)}, LABEL_MAP_SIGNATURE), self.server
        )

    def signatures(self) -> Dict[str, Any]:
        """GetModelMetadata: {signature name: SignatureDef proto}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._fill_spec(request.model_spec)
        response = self._call(self.predictions.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return dict(sig_map.signature_def)

    def status(self) -> List[Tuple[int, str, str, str]]:
        """GetModelStatus: [(version, state name, error code name, error message)], newest first."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec)
        response = self._call(self.models.GetModelStatus, request)
        state = get_model_status_pb2.ModelVersionStatus.State.Name
        return [
            (s.version, state(s.state), _code(s.status.error_code).name, s.status.error_message)
            for s in response.model_version_status
        ]


def _code(number):
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN
