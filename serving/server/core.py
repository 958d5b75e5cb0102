"""The model-serving core shared by the gRPC and REST front ends.

One place converts TensorProto <-> numpy, validates inputs against the SignatureDef (names, dtypes,
shapes, encoded-image headers), runs the signature and maps failures to TF Serving's status codes
and messages. Front ends only translate their wire format to `predict(...)` calls and
`ServingError`s back to gRPC statuses / HTTP responses.
"""

import contextlib
import logging
import threading
import uuid

import grpc
import numpy as np
import tensorflow as tf

from models.export_files import read_signature_defs
from serving.server.batching import BatchingOptions, BatchingQueue, QueueFull
from serving.server.image_limits import ImageHeaderError, check_image

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
# String inputs holding encoded images / serialised tf.train.Example whose images are checked.
ENCODED_IMAGE_INPUTS = ("images",)
EXAMPLE_INPUTS = ("examples",)
EXAMPLE_IMAGE_KEY = "image/encoded"


class ServingError(Exception):
    """A request failure with the gRPC status code TF Serving would answer."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.code.name}: {self.message}"


def invalid(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def internal_error(error, what):
    """ServingError(INTERNAL) for an exception no code path anticipated (a bug, not a bad request).

    The traceback goes to the server log under a fresh request id that the returned message carries
    too: the client only sees one line, and the id is what lets an operator find the rest.
    """
    request_id = uuid.uuid4().hex[:12]
    log.error("request %s (%s) failed with an unexpected error", request_id, what, exc_info=error)
    return ServingError(
        grpc.StatusCode.INTERNAL, f"Internal error in {what} (request id {request_id}): {type(error).__name__}: {error}"
    )


# tf.errors codes are the gRPC codes' numbers.
_GRPC_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def _tf_error(e):
    """ServingError from a tf.errors.OpError: its code, its message without the graph trace."""
    message = e.message.split("\n\t [[")[0].split("\n\nStack trace")[0].strip()
    if message.startswith("Graph execution error"):
        # "Graph execution error: Detected at node ... <stack traces unavailable>\n<the real message>"
        message = [line for line in message.splitlines() if line.strip()][-1].strip()
    return ServingError(_GRPC_BY_NUMBER.get(e.error_code, grpc.StatusCode.UNKNOWN), message)


def dtype_name(dtype_enum):
    return tf.dtypes.as_dtype(dtype_enum).name


def shape_list(shape_proto):
    """TensorShapeProto -> list of ints (-1 unknown) or None for unknown rank."""
    if shape_proto.unknown_rank:
        return None
    return [d.size for d in shape_proto.dim]


# ---------------------------------------------------------------------------------------------
# TensorProto <-> numpy


def tensor_proto_to_ndarray(proto, name):
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # malformed proto: wrong number of values for its shape, bad dtype...
        raise invalid(f"input '{name}': cannot read the TensorProto ({e})") from None


_TYPED_FIELD = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.bool_): "bool_val",
}


def ndarray_to_tensor_proto(array):
    """Like TF Serving's Tensor::AsProtoField: values in the typed repeated field (int64_val,
    float_val, ...), not tensor_content, so clients that read `.int64_val` (the reference repo's
    notebook does) keep working."""
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        proto = tf.make_tensor_proto(array)
        return proto
    field = _TYPED_FIELD.get(array.dtype)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tf.make_tensor_proto(np.zeros([0], array.dtype))
    proto.ClearField("tensor_content")
    proto.tensor_shape.Clear()
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


# ---------------------------------------------------------------------------------------------
# a loaded model version


class Servable:
    """One loaded SavedModel version: its signatures and a validated `predict`.

    `batching` (serving.server.batching.BatchingOptions; None: off) merges concurrent requests of
    the batched signatures into one call, through one BatchingQueue per signature.
    """

    def __init__(self, name, version, path, limits, batching=None):
        self.name = name
        self.version = int(version)
        self.path = path
        self.limits = limits
        self.batching = batching if batching is not None else BatchingOptions(enabled=False)
        self.signature_defs = read_signature_defs(path)
        self._loaded = tf.saved_model.load(path, tags=["serve"])
        self._functions = dict(self._loaded.signatures)
        self._queues = {}
        self._queues_lock = threading.Lock()

    def batching_queue(self, sig_name):
        """The BatchingQueue of a signature (created on first use), or None if it is not batched."""
        if not self.batching.applies_to(sig_name):
            return None
        with self._queues_lock:
            queue = self._queues.get(sig_name)
            if queue is None:
                queue = self._queues[sig_name] = BatchingQueue(
                    lambda inputs, sig_name=sig_name: self._run(sig_name, inputs),
                    self.batching,
                    name=f"batch-{self.name}-{self.version}-{sig_name}",
                )
            return queue

    def close(self):
        """Stop the batching threads (the version was unloaded); requests still arriving run unbatched."""
        with self._queues_lock:
            for queue in self._queues.values():
                queue.close()

    def _run(self, sig_name, inputs):
        """The signature on numpy inputs -> {output alias: ndarray}; TF errors as ServingErrors."""
        try:
            outputs = self._functions[sig_name](**{k: tf.constant(v) for k, v in inputs.items()})
        except tf.errors.OpError as e:
            raise _tf_error(e) from None
        except (TypeError, ValueError) as e:  # the function's own input-signature check
            raise invalid(f"signature '{sig_name}': {e}") from None
        return {k: v.numpy() for k, v in outputs.items()}

    def signature(self, signature_name, code=grpc.StatusCode.FAILED_PRECONDITION):
        name = signature_name or DEFAULT_SIGNATURE
        sig = self.signature_defs.get(name)
        if sig is None or name not in self._functions:
            known = sorted(k for k in self.signature_defs if not k.startswith("__"))
            raise ServingError(code, f'Serving signature key "{name}" not found. This model has: {", ".join(known)}')
        return name, sig

    def validate(self, sig_name, sig, inputs):
        """Check names, dtypes, shapes and image headers; raise INVALID_ARGUMENT naming the input."""
        expected, given = set(sig.inputs), set(inputs)
        if expected != given:
            raise invalid(
                f"Request inputs do not match required inputs for model `{self.name}` signature "
                f"`{sig_name}`. Send extra: {{{', '.join(sorted(given - expected))}}}. "
                f"Missing but required: {{{', '.join(sorted(expected - given))}}}."
            )
        for alias, info in sig.inputs.items():
            array = inputs[alias]
            want = tf.dtypes.as_dtype(info.dtype)
            got = _tf_dtype_of(array)
            if got != want:
                raise invalid(
                    f"input '{alias}' of signature '{sig_name}' expects {want.name} but "
                    f"{got.name if got else array.dtype} was provided"
                )
            shape = shape_list(info.tensor_shape)
            if shape is not None and (
                len(shape) != array.ndim or any(s not in (-1, a) for s, a in zip(shape, array.shape))
            ):
                raise invalid(
                    f"input '{alias}' of signature '{sig_name}' expects shape "
                    f"{_shape_str(shape)} but got {list(array.shape)}"
                )
            if want == tf.string and alias in ENCODED_IMAGE_INPUTS:
                for i, data in enumerate(array.ravel()):
                    self._check_encoded(data, f"input '{alias}'[{i}]")
            elif want == tf.string and alias in EXAMPLE_INPUTS:
                for i, data in enumerate(array.ravel()):
                    self._check_example(data, f"input '{alias}'[{i}]")
            elif (
                want.is_floating and array.ndim == 4 and array.shape[1] * array.shape[2] > self.limits.max_image_pixels
            ):
                raise invalid(
                    f"input '{alias}': {array.shape[2]}x{array.shape[1]} (WxH) images are over the "
                    f"server's limit of {self.limits.max_image_pixels} pixels"
                )

    def _check_encoded(self, data, what):
        try:
            check_image(bytes(data), self.limits.max_image_pixels, self.limits.max_image_side)
        except ImageHeaderError as e:
            raise invalid(f"{what}: {e}") from None

    def _check_example(self, data, what):
        try:
            example = tf.train.Example.FromString(bytes(data))
        except Exception:
            raise invalid(f"{what} is not a serialised tf.train.Example") from None
        images = example.features.feature.get(EXAMPLE_IMAGE_KEY)
        if images is None or len(images.bytes_list.value) != 1:
            raise invalid(f"{what}: tf.train.Example needs exactly one '{EXAMPLE_IMAGE_KEY}' bytes value")
        self._check_encoded(images.bytes_list.value[0], f"{what} '{EXAMPLE_IMAGE_KEY}'")

    def predict(self, signature_name, inputs, output_filter=()):
        """Run a signature on numpy inputs; returns (signature name, {output alias: ndarray})."""
        sig_name, sig = self.signature(signature_name)
        queue = self.batching_queue(sig_name)
        with queue.arriving() if queue is not None else contextlib.nullcontext() as arrival:
            self.validate(sig_name, sig, inputs)
            unknown = set(output_filter) - set(sig.outputs)
            if unknown:
                raise invalid(
                    f"output tensor alias(es) {sorted(unknown)} not found in signature '{sig_name}'; "
                    f"outputs are {sorted(sig.outputs)}"
                )
            if queue is None:
                outputs = self._run(sig_name, inputs)
            else:
                try:
                    outputs = queue.run(inputs, arrival)
                except QueueFull as e:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
                except ServingError:
                    raise
                except Exception as e:  # a signature whose outputs cannot be split per request, or a bug
                    raise internal_error(e, f"batching {sig_name}") from None
        wanted = set(output_filter) or set(outputs)
        return sig_name, {k: v for k, v in outputs.items() if k in wanted}

    def predict_request(self, request):
        """PredictRequest -> PredictResponse (both tensorflow_serving.apis protos)."""
        from tensorflow_serving.apis import predict_pb2

        inputs = {alias: tensor_proto_to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
        sig_name, outputs = self.predict(request.model_spec.signature_name, inputs, request.output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = sig_name
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(ndarray_to_tensor_proto(value))
        return response


def _tf_dtype_of(array):
    if array.dtype.kind in "OSU":
        return tf.string
    try:
        return tf.dtypes.as_dtype(array.dtype)
    except TypeError:
        return None


def _shape_str(shape):
    return "[" + ",".join("?" if s == -1 else str(s) for s in shape) + "]"


class Limits:
    """Request limits shared by both front ends."""

    def __init__(self, max_message_bytes=64 << 20, max_image_pixels=4096 * 4096, max_image_side=8192):
        self.max_message_bytes = int(max_message_bytes)
        self.max_image_pixels = int(max_image_pixels)
        self.max_image_side = int(max_image_side)
