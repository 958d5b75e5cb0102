"""Version management like TF Serving's file-system source with the default `latest: 1` policy.

Numeric sub-directories of the model base path are versions; anything else (e.g. the Pusher's
hidden `.tmp-*` staging folders) is ignored. The newest version is loaded, warmed up with its
`assets.extra/tf_serving_warmup_requests`, published, and only then the previous one unloaded, so
requests never see a gap. A version that fails to load or warm up ends in state END with its error
and the previous one keeps serving.
"""

import logging
import os
import threading
import time

import grpc
import tensorflow as tf

from models.export_files import ASSETS_EXTRA, WARMUP_FILENAME, export_versions
from serving.server.core import Servable, ServingError

log = logging.getLogger(__name__)

WARMUP_PATH = os.path.join(ASSETS_EXTRA, WARMUP_FILENAME)
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def list_versions(base_path):
    """Numeric version directories holding a saved_model.pb, ascending (version numbers)."""
    return [int(os.path.basename(path)) for path in export_versions(base_path)]


def replay_warmup(servable):
    """Run the version's warm-up PredictionLogs through it; returns how many were replayed."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(servable.path, WARMUP_PATH)
    if not tf.io.gfile.exists(path):
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"warm-up record {count} is a {kind}; this server replays predict_log only")
        servable.predict_request(entry.predict_log.request)
        count += 1
    return count


class ModelManager:
    """Serves the newest version under `base_path` and polls for new ones."""

    def __init__(self, name, base_path, limits, poll_seconds=1.0, warmup=True, version_labels=None, batching=None):
        self.name = name
        self.batching = batching  # serving.server.batching.BatchingOptions or None (off)
        self.base_path = base_path
        self.limits = limits
        self.poll_seconds = float(poll_seconds)
        self.warmup = warmup
        self.version_labels = dict(version_labels or {})
        self._lock = threading.Lock()
        self._servables = {}  # version -> Servable (AVAILABLE)
        self._states = {}  # version -> (state, grpc.StatusCode, message)
        self._stop = threading.Event()
        self._thread = None

    # -- lifecycle --

    def start(self):
        """Load the newest version now (synchronously), then poll in a background thread."""
        self.poll_once()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name=f"poll-{self.name}", daemon=True)
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _poll_loop(self):
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # a bad poll must not kill the poller; the next one retries
                log.exception("polling %s failed", self.base_path)

    def poll_once(self):
        versions = list_versions(self.base_path)
        if not versions:
            if not self._servables:
                log.warning("No versions of servable %s found under base path %s", self.name, self.base_path)
            return
        newest = versions[-1]
        with self._lock:
            serving = newest in self._servables
            failed = self._states.get(newest, ("", grpc.StatusCode.OK))[1] != grpc.StatusCode.OK
        # A version that failed is not retried on every poll (push a new version instead); one that
        # was unloaded for a newer version is reloaded when that newer one disappears (rollback).
        if not serving and not failed:
            self._load(newest)

    def _load(self, version):
        path = os.path.join(self.base_path, str(version))
        with self._lock:
            self._states[version] = ("LOADING", grpc.StatusCode.OK, "")
        log.info("Loading servable version {name: %s version: %d} from %s", self.name, version, path)
        start = time.time()
        try:
            servable = Servable(self.name, version, path, self.limits, batching=self.batching)
            replayed = replay_warmup(servable) if self.warmup else 0
            servable.warmup_replayed = replayed
        except Exception as e:
            code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
            message = f"Failed to load version {version} of {self.name} from {path}: {e}"
            log.error("%s", message)
            with self._lock:
                self._states[version] = ("END", code, message)
            return
        with self._lock:
            self._servables[version] = servable
            self._states[version] = ("AVAILABLE", grpc.StatusCode.OK, "")
            # latest: 1 -- unload the others once the new one is serving.
            old = [v for v in self._servables if v != version]
            for v in old:
                self._servables.pop(v).close()
                self._states[v] = ("END", grpc.StatusCode.OK, "")
        log.info(
            "Successfully loaded servable version {name: %s version: %d} in %.1f s (%d warm-up requests replayed)%s",
            self.name,
            version,
            time.time() - start,
            replayed,
            f"; unloaded {old}" if old else "",
        )

    # -- lookups used by the front ends --

    def _labelled_version(self, version, label):
        """The version a request's version_label names (INVALID_ARGUMENT if unknown), else `version`."""
        if not label:
            return version
        if label not in self.version_labels:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return self.version_labels[label]

    def get(self, name, version=None, label=None):
        """The Servable for a request's model spec, or NOT_FOUND like TF Serving's ServerCore."""
        if name != self.name:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {_request_str(name, version, label)}"
            )
        version = self._labelled_version(version, label)
        with self._lock:
            if version is None:
                servable = self._servables[max(self._servables)] if self._servables else None
            else:
                servable = self._servables.get(int(version))
        if servable is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {_request_str(name, version, label)}"
            )
        return servable

    def status(self, name, version=None, label=None):
        """[(version, state, code, message)] like GetModelStatus; NOT_FOUND for unknown model/version."""
        if name != self.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        version = self._labelled_version(version, label)
        with self._lock:
            states = dict(self._states)
        if version is not None:
            if int(version) not in states:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            states = {int(version): states[int(version)]}
        if not states:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return [(v,) + states[v] for v in sorted(states, reverse=True)]

    def available_versions(self):
        with self._lock:
            return sorted(self._servables)


def _request_str(name, version, label):
    if label:
        return f"Labeled({name}, {label})"
    if version is None:
        return f"Latest({name})"
    return f"Specific({name}, {version})"
