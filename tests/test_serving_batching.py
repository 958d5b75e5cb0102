"""serving/server/batching.py: the server-side batching queue of `deeplab serve` (no model needed).

The end-to-end checks (concurrent gRPC clients against a real export merged into fewer model runs,
each client getting its own map) are in tests/test_serving.py.
"""

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from serving.server.batching import BatchingOptions, BatchingQueue, QueueFull, batch_size_of, split_outputs


class SlowDoubler:
    """A stand-in signature: y = 2x, taking `delay` s per call, counting calls and their batch sizes."""

    def __init__(self, delay=0.05, fail_on=None):
        self.delay, self.fail_on = delay, fail_on
        self.calls, self.sizes = 0, []
        self.lock = threading.Lock()

    def __call__(self, inputs):
        time.sleep(self.delay)
        x = inputs["x"]
        with self.lock:
            self.calls += 1
            self.sizes.append(x.shape[0] if x.ndim else 0)
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise ValueError(f"bad value {self.fail_on}")
        return {"y": x * 2}


def _concurrently(fn, n, threads):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        return [f.result() if f.exception() is None else f.exception() for f in futures]


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows():
    fn = SlowDoubler(delay=0.05)
    queue = BatchingQueue(fn, BatchingOptions(max_batch_size=4, batch_timeout_micros=20000, num_batch_threads=2))
    results = _concurrently(lambda i: queue.run({"x": np.array([i, 100 + i])}), n=24, threads=8)
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], [2 * i, 200 + 2 * i])
    assert queue.stats["requests"] == 24
    assert fn.calls == queue.stats["runs"] < 24  # merged: fewer model runs than requests
    assert max(fn.sizes) <= 4 and queue.stats["merged_runs"] > 0
    assert sum(size * count for size, count in queue.stats["batch_sizes"].items()) == 48
    queue.close()


def test_a_lone_client_is_not_delayed_by_the_batch_timeout():
    fn = SlowDoubler(delay=0.0)
    queue = BatchingQueue(fn, BatchingOptions(max_batch_size=4, batch_timeout_micros=2_000_000))
    start = time.perf_counter()
    for i in range(5):
        np.testing.assert_array_equal(queue.run({"x": np.array([i])})["y"], [2 * i])
    assert time.perf_counter() - start < 1.0  # no request waited 2 s for company
    assert fn.calls == 5
    queue.close()


def test_requests_that_cannot_be_merged_run_on_their_own():
    fn = SlowDoubler(delay=0.02)
    queue = BatchingQueue(fn, BatchingOptions(max_batch_size=4, batch_timeout_micros=20000))
    # scalar input (no dimension 0), and a request larger than max_batch_size
    assert batch_size_of({"x": np.array(3)}) is None
    assert queue.run({"x": np.array(3)})["y"] == 6
    np.testing.assert_array_equal(queue.run({"x": np.arange(6)})["y"], np.arange(6) * 2)
    assert fn.sizes == [0, 6]
    # different trailing shapes (e.g. images of different sizes) never share a batch
    shapes = [(1, 3), (1, 5)] * 6

    def call(i):
        x = np.full(shapes[i], i)
        return queue.run({"x": x})["y"]

    results = _concurrently(call, len(shapes), threads=6)
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, np.full(shapes[i], 2 * i))
    queue.close()


def test_a_failing_merged_batch_is_rerun_so_only_the_bad_request_fails():
    fn = SlowDoubler(delay=0.05, fail_on=7)
    queue = BatchingQueue(fn, BatchingOptions(max_batch_size=4, batch_timeout_micros=50000, num_batch_threads=1))
    results = _concurrently(lambda i: queue.run({"x": np.array([i])}), n=12, threads=8)
    for i, out in enumerate(results):
        if i == 7:
            assert isinstance(out, ValueError) and "bad value 7" in str(out)
        else:
            np.testing.assert_array_equal(out["y"], [2 * i])
    assert queue.stats["reruns_after_error"] >= 1
    queue.close()


def test_split_outputs_crops_serving_default_maps_to_each_requests_images():
    maps = np.full([3, 6, 8], 255)
    maps[0, :4, :5] = 1
    maps[1, :6, :8] = 2
    maps[2, :2, :3] = 3
    outputs = {
        "segmentation_map": maps,
        "confidence": maps.astype(np.float32),
        "height": np.array([4, 6, 2]),
        "width": np.array([5, 8, 3]),
        "segmentation_png": np.array([b"a", b"b", b"c"]),
    }
    first, second = split_outputs(outputs, [1, 2])
    assert first["segmentation_map"].shape == (1, 4, 5) and (first["segmentation_map"] == 1).all()
    assert first["confidence"].shape == (1, 4, 5)
    assert second["segmentation_map"].shape == (2, 6, 8)
    np.testing.assert_array_equal(second["segmentation_png"], [b"b", b"c"])
    np.testing.assert_array_equal(second["height"], [6, 2])


def test_a_full_queue_refuses_instead_of_growing():
    release = threading.Event()

    def blocked(inputs):
        release.wait(10)
        return {"y": inputs["x"]}

    queue = BatchingQueue(
        blocked, BatchingOptions(max_batch_size=2, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1)
    )
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(queue.run, {"x": np.array([i])}) for i in range(8)]
        deadline = time.time() + 10
        while sum(f.done() for f in futures) < 1 and time.time() < deadline:
            time.sleep(0.01)
        release.set()
        errors = [f.exception() for f in futures]
    assert any(isinstance(e, QueueFull) for e in errors)
    assert any(e is None for e in errors)
    queue.close()


def test_options_validation_and_signature_selection():
    options = BatchingOptions()
    assert options.applies_to("serving_default") and options.applies_to("serving_png")
    assert not options.applies_to("predict_images") and not options.applies_to("logits")
    assert BatchingOptions(signatures=["*"]).applies_to("logits")
    assert not BatchingOptions(enabled=False).applies_to("serving_default")
    with pytest.raises(ValueError):
        BatchingOptions(max_batch_size=0)
