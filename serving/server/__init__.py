"""A local TF Serving-compatible model server (`deeplab serve`).

tensorflow_model_server cannot be installed everywhere (no binary for this platform, no network);
this server speaks the same APIs -- gRPC PredictionService/ModelService from
tensorflow_serving.apis and the /v1 REST API -- over the same SavedModel layout
(`<base_path>/<version>/saved_model.pb`), so clients and deployment files work unchanged with
either. Layout: core.py (validation, tensors, signatures), manager.py (versions, polling,
warm-up), grpc_api.py and rest_api.py (front ends), image_limits.py (decompression-bomb guard).
"""

import importlib
import logging
import threading
from typing import Dict, Optional, Union

from serving.server.batching import BatchingOptions  # light (no TensorFlow): `deeplab serve --help` shows its knobs

log = logging.getLogger(__name__)

__all__ = ["ModelServer", "BatchingOptions", "Limits", "ModelManager", "Servable", "ServingError", "list_versions"]
# The names of the modules that import TensorFlow, resolved on first use (PEP 562), so that importing
# serving.server (for BatchingOptions) stays instant.
_LAZY = {
    "Limits": "core",
    "Servable": "core",
    "ServingError": "core",
    "ModelManager": "manager",
    "list_versions": "manager",
    "create_grpc_server": "grpc_api",
    "RestServer": "rest_api",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ModelServer:
    """gRPC + REST endpoints for one model; use as a context manager or start()/stop().

    Port 0 picks a free port; the bound ports are `grpc_port` / `rest_port` after start().
    A port of None disables that front end. ssl_cert/ssl_key (PEM files) put gRPC behind TLS;
    REST stays plain HTTP (terminate TLS in front of it, as for TF Serving).
    `batching`: BatchingOptions (default: on for serving_default and serving_examples, TF Serving's
    batching.config values), or False/None for no server-side batching.
    """

    def __init__(
        self,
        model_base_path,
        model_name: str = "deeplab",
        host: str = "127.0.0.1",
        grpc_port: Optional[int] = 8500,
        rest_port: Optional[int] = 8501,
        poll_seconds: float = 1.0,
        max_message_mb: float = 64,
        max_image_pixels: int = 4096 * 4096,
        max_image_side: int = 8192,
        threads: int = 8,
        warmup: bool = True,
        version_labels: Optional[Dict[str, int]] = None,
        ssl_cert: Optional[str] = None,
        ssl_key: Optional[str] = None,
        batching: Union[bool, None, BatchingOptions] = True,
    ):
        from serving.server.core import Limits
        from serving.server.manager import ModelManager

        self.host = host
        self.limits = Limits(int(max_message_mb * (1 << 20)), max_image_pixels, max_image_side)
        if batching is True:
            batching = BatchingOptions()
        self.batching = batching or BatchingOptions(enabled=False)
        self.manager = ModelManager(
            model_name,
            model_base_path,
            self.limits,
            poll_seconds=poll_seconds,
            warmup=warmup,
            version_labels=version_labels,
            batching=self.batching,
        )
        self.grpc_port, self.rest_port, self.threads = grpc_port, rest_port, threads
        self.ssl_cert, self.ssl_key = ssl_cert, ssl_key
        self._grpc = self._rest = self._rest_thread = None

    def start(self):
        from serving.server.grpc_api import create_grpc_server
        from serving.server.rest_api import RestServer

        self.manager.start()
        try:
            if self.grpc_port is not None:
                self._grpc, self.grpc_port = create_grpc_server(
                    self.manager,
                    self.host,
                    self.grpc_port,
                    self.limits,
                    max_workers=self.threads,
                    ssl_cert=self.ssl_cert,
                    ssl_key=self.ssl_key,
                )
                log.info(
                    "Running gRPC ModelServer at %s:%d%s ...",
                    self.host,
                    self.grpc_port,
                    " (TLS)" if self.ssl_cert else "",
                )
            if self.rest_port is not None:
                self._rest = RestServer((self.host, self.rest_port), self.manager, self.limits)
                self.rest_port = self._rest.server_address[1]
                self._rest_thread = threading.Thread(
                    target=self._rest.serve_forever, name="rest", kwargs={"poll_interval": 0.2}, daemon=True
                )
                self._rest_thread.start()
                log.info("Exporting HTTP/REST API at %s:%d ...", self.host, self.rest_port)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, grace=2.0):
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
            self._rest = None
        if self._grpc is not None:
            self._grpc.stop(grace).wait(grace + 5)
            self._grpc = None
        self.manager.stop()

    def wait(self):
        """Block until interrupted (Ctrl-C) -- the `deeplab serve` main loop."""
        if self._grpc is not None:
            self._grpc.wait_for_termination()
        elif self._rest_thread is not None:
            self._rest_thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
