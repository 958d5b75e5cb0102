"""Server-side batching, like TF Serving's BatchingSession (`--enable_batching`).

One `BatchingQueue` per servable and signature merges concurrent requests into one call of the
signature: the requests' inputs are concatenated along dimension 0 (up to `max_batch_size`
examples, the first request waiting at most `batch_timeout_micros` for others), the signature
runs once, and its outputs are split back along dimension 0, each request getting its own rows.

Differences from TF Serving, all on the side of giving each client exactly the answer it would
get alone:
  * Only requests that can be merged are: every input has a dimension 0 of the same size (the
    request's batch size) and the same trailing shape as the other requests of the batch; a
    request with a scalar input (e.g. predict_images' height) runs on its own instead of failing
    ("Batching session Run() input tensors must have at least one dimension"); requests of
    different image sizes go into different batches (TF Serving fails them unless
    `pad_variable_length_inputs`, which would corrupt images).
  * A request waits for others only while other requests are in flight in the server: a lone
    client pays no `batch_timeout_micros` delay.
  * serving_default-like outputs (`height`/`width` [B] beside maps [B,H,W]) are cropped back to the
    request's own largest image, so a merged answer is byte-identical to the lone answer.
  * If a merged run fails (e.g. one request's image decodes badly), each request of the batch is
    rerun on its own, so only the bad request gets the error.
  * A request bigger than `max_batch_size` runs on its own (TF Serving would refuse it).
"""

import collections
import dataclasses
import logging
import threading
import time
from concurrent.futures import Future

log = logging.getLogger(__name__)

# TF Serving's defaults as in serving/config/batching.config.
DEFAULT_MAX_BATCH_SIZE = 4
DEFAULT_BATCH_TIMEOUT_MICROS = 5000
DEFAULT_NUM_BATCH_THREADS = 4
DEFAULT_MAX_ENQUEUED_BATCHES = 16
# Signatures batched when batching is on: string [B] inputs of any image sizes merge freely.
DEFAULT_BATCHED_SIGNATURES = ("serving_default", "serving_examples", "serving_png")


def _knob(default, help):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """The knobs of TF Serving's BatchingParameters that apply here; `signatures` names the batched ones.
    Each knob's `help` is that of its `deeplab serve` flag (--max-batch-size, ...)."""

    enabled: bool = True
    max_batch_size: int = _knob(DEFAULT_MAX_BATCH_SIZE, "most images in one merged batch")
    batch_timeout_micros: int = _knob(
        DEFAULT_BATCH_TIMEOUT_MICROS,
        "how long the first request of a batch waits for others (only while other requests are in flight: a "
        "lone client is not delayed)",
    )
    num_batch_threads: int = _knob(DEFAULT_NUM_BATCH_THREADS, "batches run in parallel")
    max_enqueued_batches: int = _knob(
        DEFAULT_MAX_ENQUEUED_BATCHES, "queue bound in batches; beyond it requests get UNAVAILABLE"
    )
    signatures: tuple = DEFAULT_BATCHED_SIGNATURES

    def __post_init__(self):
        for knob in self.knobs():
            object.__setattr__(self, knob.name, int(getattr(self, knob.name)))
        object.__setattr__(self, "enabled", bool(self.enabled))
        object.__setattr__(self, "signatures", tuple(self.signatures))
        if min(self.max_batch_size, self.num_batch_threads, self.max_enqueued_batches) < 1:
            raise ValueError("max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must be >= 0")

    @classmethod
    def knobs(cls):
        """The integer fields, each with its flag's help."""
        return [f for f in dataclasses.fields(cls) if "help" in f.metadata]

    def applies_to(self, signature_name):
        return self.enabled and ("*" in self.signatures or signature_name in self.signatures)


def batch_size_of(inputs):
    """The request's batch size if it can be merged with others (every input has the same dimension 0),
    else None."""
    sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    size = sizes.pop()
    return size if size > 0 else None


def _merge_key(inputs):
    """Requests merge only with requests of the same input names, dtypes and trailing shapes."""
    return tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))


class _Task:
    __slots__ = ("inputs", "size", "key", "future")

    def __init__(self, inputs, size):
        self.inputs, self.size, self.key = inputs, size, _merge_key(inputs)
        self.future = Future()


def split_outputs(outputs, sizes):
    """{alias: [sum(sizes), ...] ndarray} -> one dict per request, rows split along dimension 0.

    serving_default-style outputs (int `height`/`width` [B] beside maps [B,H,W]) are cropped to the
    request's own largest image, as the signature answers a request alone.
    """
    import numpy as np

    bounds = np.cumsum([0] + list(sizes))
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = {k: v[start:stop] for k, v in outputs.items()}
        h, w = part.get("height"), part.get("width")
        if h is not None and w is not None and h.ndim == 1 and w.ndim == 1 and len(h):
            hm, wm = int(h.max()), int(w.max())
            for k, v in part.items():
                if v.ndim >= 3 and k not in ("height", "width"):
                    part[k] = v[:, :hm, :wm]
        parts.append(part)
    return parts


class QueueFull(Exception):
    """The queue holds max_enqueued_batches batches already (TF Serving answers UNAVAILABLE)."""


class BatchingQueue:
    """Merges concurrent `run(inputs)` calls into calls of `fn(inputs) -> {alias: ndarray}`.

    `fn` must be thread-safe (a TF concrete function is). `stats` counts requests, runs of `fn` and
    the batch sizes run, for tests and monitoring.
    """

    def __init__(self, fn, options, name="batching"):
        self.fn, self.options, self.name = fn, options, name
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._threads = []
        self._closed = False
        self._in_flight = 0  # run() calls not yet answered (queued, being batched or running)
        self._forming = 0  # tasks taken by workers but not yet run
        self._arriving = 0  # requests announced by arriving() and not yet queued (being parsed/validated)
        self._former = False  # a worker is forming a batch: the others wait, so new requests join it
        self.stats = {
            "requests": 0,
            "runs": 0,
            "merged_runs": 0,
            "batch_sizes": collections.Counter(),
            "reruns_after_error": 0,
        }

    # -- client side --

    def arriving(self):
        """Context manager around a request's parsing/validation before `run`: a forming batch waits
        for announced requests (up to the timeout) instead of leaving without them."""
        queue = self

        class _Arriving:
            counted = False

            def __enter__(self):
                with queue._cond:
                    queue._arriving += 1
                    self.counted = True
                return self

            def __exit__(self, *exc):
                with queue._cond:
                    queue._leave(self)
                    queue._cond.notify_all()

        return _Arriving()

    def _leave(self, arrival):
        if arrival is not None and arrival.counted:
            arrival.counted = False
            self._arriving -= 1

    def run(self, inputs, arrival=None):
        """Outputs for this request alone (dict of ndarrays); raises what `fn` raises.
        `arrival`: the request's `arriving()` context, ended when the request is queued."""
        size = batch_size_of(inputs)
        with self._cond:
            self.stats["requests"] += 1
            closed = self._closed
            self._leave(arrival)
        if closed or size is None or size >= self.options.max_batch_size:
            return self._run_alone(inputs)
        task = _Task(inputs, size)
        with self._cond:
            if len(self._queue) >= self.options.max_enqueued_batches * self.options.max_batch_size:
                raise QueueFull(
                    f"The batch scheduling queue to which this task was submitted is full "
                    f"({len(self._queue)} requests waiting; max_enqueued_batches="
                    f"{self.options.max_enqueued_batches})"
                )
            self._queue.append(task)
            self._in_flight += 1
            self._start_workers()
            self._cond.notify_all()
        try:
            return task.future.result()
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _run_alone(self, inputs):
        outputs = self.fn(inputs)
        with self._cond:
            self.stats["runs"] += 1
            self.stats["batch_sizes"][batch_size_of(inputs) or 0] += 1
        return outputs

    def close(self):
        """Stop the workers once the queued requests are answered; later calls run alone."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- workers --

    def _start_workers(self):
        while len(self._threads) < self.options.num_batch_threads:
            thread = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _take_batch(self):
        """Wait for a first task, then gather compatible ones until the batch is full or the
        timeout passes (waiting only while other requests are in flight). None when closed."""
        timeout = self.options.batch_timeout_micros / 1e6
        limit = self.options.max_batch_size
        with self._cond:
            while not self._queue or self._former:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch, total = [first], first.size
            self._forming += 1
            self._former = True
            deadline = time.monotonic() + timeout
            try:
                while total < limit:
                    # Compatible queued tasks that fit, in arrival order.
                    for task in list(self._queue):
                        if task.key == first.key and total + task.size <= limit:
                            self._queue.remove(task)
                            batch.append(task)
                            total += task.size
                            self._forming += 1
                    if total >= limit:
                        break
                    # Others on their way: requests in flight that are neither in a forming batch
                    # nor queued incompatible -- typically clients whose previous answer just left.
                    others = self._in_flight - self._forming - len(self._queue) + self._arriving
                    remaining = deadline - time.monotonic()
                    if others <= 0 or remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
            finally:
                self._forming -= len(batch)
                self._former = False
                self._cond.notify_all()
            return batch

    def _work(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _run_batch(self, batch):
        if len(batch) == 1:
            task = batch[0]
            try:
                task.future.set_result(self._run_alone(task.inputs))
            except BaseException as e:  # the request's own error, delivered to its caller
                task.future.set_exception(e)
            return
        import numpy as np  # here, not at the top: `deeplab serve --help` imports this module for its knobs

        merged = {k: np.concatenate([t.inputs[k] for t in batch], axis=0) for k in batch[0].inputs}
        try:
            outputs = self.fn(merged)
        except BaseException as e:
            # One bad request must not fail the others: rerun each alone.
            log.info("%s: merged batch of %d requests failed (%s); rerunning them one by one", self.name, len(batch), e)
            with self._cond:
                self.stats["reruns_after_error"] += 1
            for task in batch:
                try:
                    task.future.set_result(self._run_alone(task.inputs))
                except BaseException as e2:
                    task.future.set_exception(e2)
            return
        total = sum(t.size for t in batch)
        with self._cond:
            self.stats["runs"] += 1
            self.stats["merged_runs"] += 1
            self.stats["batch_sizes"][total] += 1
        try:
            bad = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != total]
            if bad:
                raise ValueError(
                    f"outputs {bad} have no batch dimension of size {total}: this signature cannot be batched"
                )
            parts = split_outputs(outputs, [t.size for t in batch])
        except BaseException as e:
            for task in batch:
                task.future.set_exception(e)
            return
        for task, part in zip(batch, parts):
            task.future.set_result(part)
