"""gRPC front end: TF Serving's PredictionService and ModelService on the shared core."""

import functools
import logging
from concurrent import futures

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving.server.core import ServingError, internal_error

log = logging.getLogger(__name__)


def _version_of(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
    return version, label


def _abort(context, error):
    log.info("request refused: %s", error)
    context.abort(error.code, error.message)


def _answered(method):
    """Every RPC ends with a status: ServingErrors with their own code, anything else INTERNAL.

    grpc would otherwise answer an escaped exception with UNKNOWN and a bare "Exception calling
    application" that no log line can be matched to.
    """

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as e:
            _abort(context, e)
        except Exception as e:
            if context.code() is not None:  # context.abort() itself raises; the status is already set
                raise
            _abort(context, internal_error(e, f"gRPC {method.__name__}"))

    return wrapper


def metadata_response(manager, model_spec):
    """GetModelMetadataResponse with the signature_def map (shared with the REST metadata endpoint)."""
    version, label = _version_of(model_spec)
    servable = manager.get(model_spec.name, version, label)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for name, sig in servable.signature_defs.items():
        sig_map.signature_def[name].CopyFrom(sig)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(sig_map)
    return response


def status_response(manager, model_spec):
    """GetModelStatusResponse (shared with the REST status endpoint)."""
    version, label = _version_of(model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, code, message in manager.status(model_spec.name, version, label):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        entry.status.error_code = code.value[0]
        entry.status.error_message = message
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager):
        self.manager = manager

    @_answered
    def Predict(self, request, context):
        version, label = _version_of(request.model_spec)
        return self.manager.get(request.model_spec.name, version, label).predict_request(request)

    @_answered
    def GetModelMetadata(self, request, context):
        unsupported = [f for f in request.metadata_field if f != "signature_def"]
        if unsupported or not request.metadata_field:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Metadata field {unsupported[0] if unsupported else '(none)'} is not "
                "supported; ask for metadata_field 'signature_def'",
            )
        return metadata_response(self.manager, request.model_spec)

    def _unimplemented(self, what, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{what} is not implemented by this server: DeepLab signatures are Predict signatures",
        )

    @_answered
    def Classify(self, request, context):
        self._unimplemented("Classify", context)

    @_answered
    def Regress(self, request, context):
        self._unimplemented("Regress", context)

    @_answered
    def MultiInference(self, request, context):
        self._unimplemented("MultiInference", context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager):
        self.manager = manager

    @_answered
    def GetModelStatus(self, request, context):
        return status_response(self.manager, request.model_spec)

    @_answered
    def HandleReloadConfigRequest(self, request, context):
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "HandleReloadConfigRequest is not implemented: this server serves one model from "
            "--model-base-path and picks up new versions by polling it",
        )


def create_grpc_server(manager, host, port, limits, max_workers=8, ssl_cert=None, ssl_key=None):
    """A started grpc.Server; returns (server, bound port). ssl_cert/ssl_key: PEM files -> TLS."""
    options = [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"), options=options
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    if ssl_cert or ssl_key:
        if not (ssl_cert and ssl_key):
            raise ValueError("TLS needs both --ssl-cert and --ssl-key (PEM files)")
        with open(ssl_key, "rb") as f_key, open(ssl_cert, "rb") as f_cert:
            credentials = grpc.ssl_server_credentials([(f_key.read(), f_cert.read())])
        bound = server.add_secure_port(f"{host}:{port}", credentials)
    else:
        bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind gRPC port {host}:{port} (in use?)")
    server.start()
    return server, bound
