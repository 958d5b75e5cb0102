"""Peak memory of ingesting Cityscapes-size (2048x1024) images: the reader alone, and VocExampleGen with Beam.

Writes N synthetic 2048x1024 pairs (leftImg8bit PNG + gtFine labelIds PNG, split `train`, city `bench`)
into a temp dir in a child process, then:

- reader only: in a process that has written nothing, reads and remaps them with
  `data.cityscapes.CityscapesDataset.iter_samples` (a generator: one image alive at a time) and reports the
  peak RSS (resource.getrusage) before and after;
- unless --no-beam, runs the real VocExampleGen executor (layout=cityscapes, data_root=the tree, split
  train=train) over the tree, each time in a fresh child process:
  (a) in process (`--direct_running_mode=in_memory --direct_num_workers=1`): that process's peak RSS after
      its imports and after the run;
  (b) 2 Beam workers (`--direct_running_mode=multi_processing --direct_num_workers=2`): each SDK worker's
      peak RSS (VmHWM from /proc, polled every 0.1 s by a thread), plus RUSAGE_CHILDREN of the pipeline
      process for reference. RUSAGE_CHILDREN is NOT a worker's figure here: Linux carries a process's peak
      across fork+exec, so a child forked from the ~800 MiB pipeline process (TF imported) counts as
      ~800 MiB however small it stays (it already reads ~560 MiB before the run, from children started
      during the imports).
Prints a table and writes JSON to --out. Not part of the test suite.

    .venv/bin/python bench/large_images.py --num 4 --out /tmp/large_images_4.json
    .venv/bin/python bench/large_images.py --num 16     # -> bench/results/large_images.json

Measured on a 2-core machine with other work (a test run) going on, so the seconds are loose; they include
Beam start-up (~3 s in process, ~9 s with 2 workers), hence the falling s/image. Peaks in MiB:

    images  reader only      ExampleGen in process   ExampleGen 2 workers: each worker   rejects
            imports -> peak  imports -> peak          (worker imports alone: ~210)
    4       38 -> 71         810 -> 844   (3.5 s)    249, 243                  (9.9 s)   0
    16      38 -> 71         810 -> 843   (5.2 s)    248, 248                  (11.1 s)  0

One decoded 2048x1024 RGB image is 6 MiB (the pair with its uint8 mask 8 MiB; 16 pairs 128 MiB): the
growth during ingestion (~+33 MiB in process, ~+38 MiB per worker over its imports) is a few images' worth
and the same for 4 and 16 images, i.e. memory does not grow with the number of images.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WIDTH, HEIGHT = 2048, 1024
SPLIT = "train"  # write_tree's split folder (leftImg8bit/train/bench/), an ExampleGen split name as it is
BEAM_MODES = {
    "in_process": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "2_workers": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}
DEFAULT_OUT = os.path.join(REPO, "bench", "results", "large_images.json")


def _peak_mib(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


class _ChildPeakPoller:
    """Polls VmHWM (peak RSS) of every descendant process in a background thread: the workers' own peaks,
    which RUSAGE_CHILDREN does not give (see the module docstring). A peak reached in a worker's last 0.1 s
    before it exits would be missed."""

    def __init__(self, interval=0.1):
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    with open(f"/proc/{child.pid}/status") as f:
                        hwm = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
                    name = "" if child.name() in ("sh", "bash", "dash") else " ".join(child.cmdline())[:200]
                except (OSError, psutil.Error):
                    continue
                old = self.peaks.get(child.pid, (0, name))
                self.peaks[child.pid] = (max(old[0], hwm / 1024), name)
            self._stop.wait(self.interval)

    def workers(self):
        """Peak MiB of each SDK worker process seen (the shell wrapping one left out)."""
        return sorted(
            (round(mib, 1) for mib, name in self.peaks.values() if "sdk_worker_main" in name),
            reverse=True,
        )


def run_example_gen(root, out_dir, beam_args):
    """VocExampleGen's executor as TFX runs it (cf. tests/test_label_map_pipeline.py run_example_gen):
    layout cityscapes at `root`, split SPLIT; returns the report dict."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.voc_example_gen import component, executor

    artifact = standard_artifacts.Examples()
    artifact.uri = out_dir
    exec_properties = {
        "input_config": proto_utils.proto_to_json(component.make_input_config({SPLIT: SPLIT}, None, "cityscapes")),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "voc_root": None,
        "sbd_root": None,
        "max_rejected_fraction": 1.0,
        "num_shards": 0,
        "label_map": None,
        "layout": "cityscapes",
        "data_root": root,
    }
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=list(beam_args), tmp_dir=out_dir)
    executor.Executor(context).Do({}, {"examples": [artifact]}, exec_properties)
    with open(os.path.join(out_dir, executor.REPORT_FILE)) as f:
        return json.load(f)


def beam_child(mode, root, result_path):
    """Runs in a fresh process: imports, one ExampleGen run in `mode`, the peaks written to `result_path`."""
    import apache_beam  # noqa: F401  (imports counted before the run, as a worker pays them too)
    import tensorflow  # noqa: F401
    from tfx.dsl.components.base import base_beam_executor  # noqa: F401

    from components.voc_example_gen import executor  # noqa: F401

    before, children_before = _peak_mib(), _peak_mib(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory(prefix="bench_large_out_") as out_dir:
        start = time.time()
        if mode == "2_workers":
            with _ChildPeakPoller() as poller:
                report = run_example_gen(root, out_dir, BEAM_MODES[mode])
        else:
            poller = None
            report = run_example_gen(root, out_dir, BEAM_MODES[mode])
        seconds = time.time() - start
    split = report["splits"][SPLIT]
    result = {
        "mode": mode,
        "beam_args": BEAM_MODES[mode],
        "images": split["examples"],
        "rejected": split["rejected"],
        "rejects_by_reason": split["rejects_by_reason"],
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / max(split["examples"], 1), 2),
        "pipeline_process_peak_mib_after_imports": round(before, 1),
        "pipeline_process_peak_mib_after_run": round(_peak_mib(), 1),
    }
    if poller is not None:
        # Linux keeps a process's peak across fork+exec: a worker forked from this process (TF imported)
        # reports at least this process's RSS at the fork, so the polled VmHWM is the worker's own figure.
        result["rusage_children_mib_before_run"] = round(children_before, 1)
        result["worker_peak_mib_rusage_children"] = round(_peak_mib(resource.RUSAGE_CHILDREN), 1)
        result["worker_peaks_mib_vmhwm_polled"] = poller.workers()
    with open(result_path, "w") as f:
        json.dump(result, f)


def write_tree(root, num):
    """N Cityscapes-layout pairs in train/bench/: smooth RGB images, labelIds masks of blocks of ids 0..33."""
    import numpy as np
    from PIL import Image

    image_dir = os.path.join(root, "leftImg8bit", "train", "bench")
    mask_dir = os.path.join(root, "gtFine", "train", "bench")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for k in range(num):
        rng = np.random.default_rng(k)
        image = np.stack(
            [(xx * 255 // WIDTH + 40 * k) % 256, (yy * 255 // HEIGHT) % 256, ((xx + yy) // 16 + k) % 256], axis=-1
        ).astype(np.uint8)
        image = np.clip(image + rng.integers(0, 8, image.shape), 0, 255).astype(np.uint8)
        blocks = rng.integers(0, 34, size=(HEIGHT // 64, WIDTH // 64)).astype(np.uint8)
        mask = np.kron(blocks, np.ones((64, 64), np.uint8))
        image_id = f"bench_{k:06d}_000019"
        Image.fromarray(image).save(os.path.join(image_dir, f"{image_id}_leftImg8bit.png"), compress_level=1)
        Image.fromarray(mask, mode="L").save(os.path.join(mask_dir, f"{image_id}_gtFine_labelIds.png"))


def read_only(root, num):
    """The reader alone (data.cityscapes.CityscapesDataset.iter_samples) in this process: peaks before/after."""
    import numpy as np

    from data.cityscapes import CityscapesDataset

    dataset = CityscapesDataset(root)
    before = _peak_mib()
    start, count, pixels = time.time(), 0, np.zeros(256, np.int64)
    for ref, image, mask in dataset.iter_samples(SPLIT):
        assert image.shape == (HEIGHT, WIDTH, 3) and mask.shape == (HEIGHT, WIDTH)
        pixels += np.bincount(mask.ravel(), minlength=256)
        count += 1
        del image, mask
    seconds, after = time.time() - start, _peak_mib()
    per_pair = (WIDTH * HEIGHT * 4) / 2**20
    print(
        f"read+remapped {count} pairs in {seconds:.1f} s; peak RSS {before:.0f} MiB after imports, "
        f"{after:.0f} MiB after reading (+{after - before:.0f} MiB; one decoded pair = {per_pair:.0f} MiB, "
        f"all {count} = {per_pair * count:.0f} MiB); ignore share {pixels[255] / pixels.sum():.2f}"
    )
    return {
        "images": count,
        "seconds": round(seconds, 1),
        "seconds_per_image": round(seconds / max(count, 1), 2),
        "peak_mib_after_imports": round(before, 1),
        "peak_mib_after_read": round(after, 1),
        "ignore_share": round(float(pixels[255] / pixels.sum()), 3),
    }


def run_beam(mode, root):
    """One ExampleGen run in a fresh child process (nothing written or read before it); its result dict."""
    env = dict(os.environ)
    # The SDK worker subprocesses of multi_processing mode import the executor's module too.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--beam-child", mode, root, result.name], check=True, env=env
        )
        with open(result.name) as f:
            return json.load(f)


def print_table(results):
    decoded_mib = WIDTH * HEIGHT * 3 / 2**20
    rows = [("run", "images", "rejects", "s", "s/img", "peak before MiB", "peak after MiB", "each worker's peak MiB")]
    reader = results["reader_only"]
    rows.append(
        (
            "reader only (iter_samples)",
            reader["images"],
            "-",
            reader["seconds"],
            reader["seconds_per_image"],
            reader["peak_mib_after_imports"],
            reader["peak_mib_after_read"],
            "-",
        )
    )
    for mode, r in results.get("beam", {}).items():
        worker = "-"
        if "worker_peak_mib_rusage_children" in r:
            polled = r["worker_peaks_mib_vmhwm_polled"]
            children = r["worker_peak_mib_rusage_children"]
            worker = ", ".join(f"{p:.0f}" for p in polled) + f" (RUSAGE_CHILDREN {children:.0f})"
        rows.append(
            (
                f"ExampleGen {mode}",
                r["images"],
                r["rejected"],
                r["seconds"],
                r["seconds_per_image"],
                r["pipeline_process_peak_mib_after_imports"],
                r["pipeline_process_peak_mib_after_run"],
                worker,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print(f"one {WIDTH}x{HEIGHT} RGB image decoded = {decoded_mib:.0f} MiB (its uint8 mask: {decoded_mib / 3:.0f} MiB)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=20, help="images to write and read (default 20)")
    parser.add_argument(
        "--no-beam", action="store_true", help="skip the VocExampleGen runs (in-process and 2 Beam workers)"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON results (default {os.path.relpath(DEFAULT_OUT)})")
    parser.add_argument("--write-only", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--beam-child", nargs=3, metavar=("MODE", "ROOT", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_only:
        write_tree(args.write_only, args.num)
        return 0
    if args.beam_child:
        beam_child(*args.beam_child)
        return 0
    results = {
        "num": args.num,
        "width": WIDTH,
        "height": HEIGHT,
        "decoded_image_mib": WIDTH * HEIGHT * 3 / 2**20,
        "decoded_pair_mib": WIDTH * HEIGHT * 4 / 2**20,
    }
    with tempfile.TemporaryDirectory(prefix="bench_large_") as root:
        start = time.time()
        subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--num", str(args.num), "--write-only", root], check=True
        )
        print(f"wrote {args.num} Cityscapes-layout {WIDTH}x{HEIGHT} pairs in {time.time() - start:.1f} s")
        results["reader_only"] = read_only(root, args.num)
        if not args.no_beam:
            results["beam"] = {}
            for mode in BEAM_MODES:
                results["beam"][mode] = run_beam(mode, root)
                print(f"ExampleGen {mode}: {json.dumps(results['beam'][mode])}")
    print_table(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
