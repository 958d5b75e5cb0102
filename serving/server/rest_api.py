"""REST front end: TF Serving's /v1 JSON API on the shared core.

  POST /v1/models/NAME[/versions/N | /labels/L]:predict   row ("instances") or columnar ("inputs")
  GET  /v1/models/NAME[/versions/N | /labels/L]           GetModelStatus as JSON
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata  GetModelMetadata as JSON

Errors are `{ "error": "<message>" }` with TF Serving's status-code -> HTTP mapping; an unexpected
exception is a 500 whose message carries the request id of its logged traceback.
Binary values travel as {"b64": "..."}, like TF Serving.
"""

import base64
import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

from serving.server.core import ServingError, internal_error, invalid
from serving.server.grpc_api import metadata_response, status_response

log = logging.getLogger(__name__)

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_VERSION = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
PREDICT_RE = re.compile(r"(?i)/v1/models/([^/:]+)" + _VERSION + r":(classify|regress|predict)")
STATUS_RE = re.compile(r"(?i)/v1/models(?:/([^/:]+))?" + _VERSION + r"(?:/(metadata))?")


# ---------------------------------------------------------------------------------------------
# JSON <-> numpy (TF Serving's json_tensor semantics, for the dtypes a signature can declare)


def _decode_value(value, what):
    """Replace {"b64": ...} objects by bytes, recursively."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise invalid(f"{what}: 'b64' value is not valid base64") from None
        raise invalid(f'{what}: JSON objects are only allowed as {{"b64": ...}} binary values')
    if isinstance(value, list):
        return [_decode_value(v, what) for v in value]
    return value


def json_to_array(value, dtype, what):
    """A JSON value (scalar or nested lists) -> ndarray of the signature's dtype."""
    value = _decode_value(value, what)
    if dtype == tf.string:
        array = np.array(value, dtype=object)
        if array.dtype != object or any(isinstance(v, list) for v in array.ravel()):
            raise invalid(f"{what}: lists must be rectangular (all rows the same length)")
        if not all(isinstance(v, (bytes, str)) for v in array.ravel()):
            raise invalid(f'{what}: expects strings (binary data as {{"b64": ...}}), got a non-string value')
        return (
            np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(array)
            if array.size
            else array
        )
    try:
        raw = np.array(value)
    except ValueError:
        raw = None
    if raw is None or raw.dtype == object:
        raise invalid(f"{what}: lists must be rectangular (all rows the same length) and hold numbers")
    if raw.dtype.kind in "US":
        raise invalid(f"{what}: expects {dtype.name} numbers but got strings")
    if dtype.is_integer and raw.dtype.kind == "f":
        raise invalid(f"{what}: expects {dtype.name} but got non-integer numbers")
    if dtype.is_bool and raw.dtype.kind != "b":
        raise invalid(f"{what}: expects booleans")
    return raw.astype(dtype.as_numpy_dtype)


def _json_value(array):
    if array.dtype.kind in "OS":

        def enc(v):
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(v).decode("ascii")}

        return np.vectorize(enc, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def parse_predict_body(body, signature_inputs):
    """(signature_name, {alias: ndarray}, format) from a predict request body.

    signature_inputs: callable(signature_name) -> {alias: TensorInfo}.
    """
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
        raise invalid('JSON Value is not an object: expecting {"instances": [...]} or {"inputs": ...}')
    sig_name = request.get("signature_name", "") or ""
    if not isinstance(sig_name, str):
        raise invalid("'signature_name' must be a string")
    has_rows, has_cols = "instances" in request, "inputs" in request
    if has_rows == has_cols:
        raise invalid(
            "JSON Value: must have exactly one of 'instances' (row format) or 'inputs' (columnar format) keys"
        )
    infos = signature_inputs(sig_name)
    if has_rows:
        return sig_name, _rows_to_arrays(request["instances"], infos), "row"
    return sig_name, _columns_to_arrays(request["inputs"], infos), "columnar"


def _rows_to_arrays(instances, infos):
    if not isinstance(instances, list) or not instances:
        raise invalid("'instances' must be a non-empty list")
    aliases = sorted(infos)
    named = all(isinstance(i, dict) and set(i) != {"b64"} for i in instances)
    if not named:
        if len(aliases) != 1:
            raise invalid(
                f"instances must be objects naming the signature inputs {aliases} "
                "(the signature has more than one input)"
            )
        columns = {aliases[0]: instances}
    else:
        columns = {}
        for n, instance in enumerate(instances):
            if set(instance) != set(aliases):
                raise invalid(f"instance {n} has keys {sorted(instance)} but the signature inputs are {aliases}")
            for alias in aliases:
                columns.setdefault(alias, []).append(instance[alias])
    arrays = {}
    for alias, rows in columns.items():
        dtype = tf.dtypes.as_dtype(infos[alias].dtype)
        arrays[alias] = json_to_array(rows, dtype, f"input '{alias}'")
    return arrays


def _columns_to_arrays(inputs, infos):
    aliases = sorted(infos)
    if isinstance(inputs, dict) and set(inputs) != {"b64"}:
        values = inputs
    elif len(aliases) == 1:
        values = {aliases[0]: inputs}
    else:
        raise invalid(f"'inputs' must be an object naming the signature inputs {aliases}")
    arrays = {}
    for alias, value in values.items():
        if alias not in infos:
            arrays[alias] = np.array([])  # reported by the core as an extra input
            continue
        arrays[alias] = json_to_array(value, tf.dtypes.as_dtype(infos[alias].dtype), f"input '{alias}'")
    return arrays


def format_predict_response(outputs, fmt):
    """TF Serving's response JSON: {"predictions": [...]} (row) or {"outputs": ...} (columnar)."""
    if fmt == "columnar":
        if len(outputs) == 1:
            return {"outputs": _json_value(next(iter(outputs.values())))}
        return {"outputs": {k: _json_value(v) for k, v in outputs.items()}}
    sizes = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid(
            "Tensors in the row format response must all have the same (batch) 0th dimension; "
            "use the columnar 'inputs' format for this signature"
        )
    if len(outputs) == 1:
        return {"predictions": _json_value(next(iter(outputs.values())))}
    names = sorted(outputs)
    columns = {k: _json_value(outputs[k]) for k in names}
    return {"predictions": [{k: columns[k][i] for k in names} for i in range(sizes.pop())]}


# ---------------------------------------------------------------------------------------------
# HTTP server


def _model_spec(name, version, label):
    spec = model_pb2.ModelSpec(name=name)
    if version:
        spec.version.value = int(version)
    elif label:
        spec.version_label = label
    return spec


class RestHandler(BaseHTTPRequestHandler):
    server_version = "deeplab-serving"
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections under load

    def log_message(self, fmt, *args):  # route http.server's stderr lines into logging
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _reply(self, status, payload):
        body = (json.dumps(payload, indent=None) if not isinstance(payload, str) else payload).encode()
        self._reply_started = True
        self.send_response(status)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error, status=None):
        log.info("REST %s %s refused: %s", self.command, self.path, error)
        self._reply(status or HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def _discard_body(self, length, limit):
        """Drain an oversized body in small chunks (no buffering) so the client reads our answer
        instead of a reset connection; give up on absurd sizes."""
        if length > 4 * limit:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _answer(self, route):
        """Run a route so that every request gets an answer: ServingErrors with their status, any
        other exception a logged 500 (http.server would just drop the connection)."""
        self._reply_started = False
        try:
            route()
        except ServingError as e:
            self._error(e)
        except Exception as e:
            # Closing is the safe state: the body may be unread and must not be parsed as the next request.
            self.close_connection = True
            if self._reply_started and isinstance(e, OSError):
                log.info("REST %s %s: connection lost while answering: %s", self.command, self.path, e)
                return
            error = internal_error(e, f"REST {self.command} {self.path}")
            if self._reply_started:  # half an answer is on the wire: the closed connection is all we can add
                return
            try:
                self._error(error)
            except OSError as write_error:
                log.info("REST %s %s: could not send the 500: %s", self.command, self.path, write_error)

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _get(self):
        manager = self.server.manager
        path = self.path.split("?", 1)[0]
        match = STATUS_RE.fullmatch(path)
        if not match:
            raise invalid(f"Malformed request: GET {path}")
        name, version, label, metadata = match.groups()
        if not name:
            raise invalid("Missing model name in request.")
        spec = _model_spec(name, version, label)
        if metadata:
            response = metadata_response(manager, spec)
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(sig_map)
            payload = {
                "model_spec": json_format.MessageToDict(
                    response.model_spec, preserving_proto_field_name=True, including_default_value_fields=True
                ),
                "metadata": {"signature_def": json_format.MessageToDict(sig_map, preserving_proto_field_name=True)},
            }
        else:
            payload = json_format.MessageToDict(
                status_response(manager, spec), preserving_proto_field_name=True, including_default_value_fields=True
            )
        self._reply(200, json.dumps(payload, indent=1))

    def _post(self):
        manager, limits = self.server.manager, self.server.limits
        path = self.path.split("?", 1)[0]
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise invalid("POST needs a Content-Length header")
        if int(length) > limits.max_message_bytes:
            self._discard_body(int(length), limits.max_message_bytes)
            # 413, not the 429 RESOURCE_EXHAUSTED maps to: TF Serving's REST API has no body limit to
            # copy, and 429 would invite clients to retry the same oversized request.
            return self._error(
                ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Request body of {int(length)} bytes is larger than the server's limit of "
                    f"{limits.max_message_bytes} bytes (--max-message-mb)",
                ),
                status=413,
            )
        body = self.rfile.read(int(length))
        match = PREDICT_RE.fullmatch(path)
        if not match:
            raise invalid(f"Malformed request: POST {path}")
        name, version, label, method = match.groups()
        if method.lower() != "predict":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method} is not implemented by this server: DeepLab signatures are Predict signatures (use :predict)",
            )
        servable = manager.get(name, version, label)
        sig_name, inputs, fmt = parse_predict_body(
            body, lambda s: servable.signature(s, code=grpc.StatusCode.INVALID_ARGUMENT)[1].inputs
        )
        _, outputs = servable.predict(sig_name, inputs)
        self._reply(200, format_predict_response(outputs, fmt))


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, manager, limits):
        super().__init__(address, RestHandler)
        self.manager = manager
        self.limits = limits
