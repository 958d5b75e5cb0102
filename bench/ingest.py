"""Ingest throughput: VocExampleGen's Beam pipeline (DirectRunner: threads and worker processes) vs a plain loop.

Both do the same work per sample with the same data/ functions (data.tfrecord.load_sample: read,
validate, convert the mask -> example_bytes -> GZIP TFRecords) on one synthetic VOCdevkit tree made
here (cached under --data-dir; generation is not timed). The Beam side is the real executor
(`Executor.Do`: pipeline build, worker start-up, run, report), timed from the call to its return; the
loop, one process writing with TensorFlow's TFRecordWriter (C++ zlib and CRC), is timed the same way.

Each --sizes entry is one loop run and one Beam run per --running-mode on the first N ids of the tree, so that
the fixed cost (Beam's worker processes starting: importing Beam takes ~2.4 s of CPU each, ~8 s where Beam's
bytecode is not compiled, see --pycache-prefix) and the per-image rate ("marginal": extra images / extra seconds
between consecutive sizes) are reported apart. The default modes are the pipeline's ingest default on the
DirectRunner, threads (configs.INGEST_BEAM_PIPELINE_ARGS), then worker processes. Prints JSON with
`beam_over_loop` (loop seconds / Beam seconds) per size and mode, CPU seconds of both sides, and the load average:
on a shared machine the workers cannot show their parallelism, so compare ratios measured in one run, and see
`beam_over_loop_idle_cpu_estimate`.

    .venv/bin/python bench/ingest.py                            # 2,000 and 10,000 images, threads and processes
    .venv/bin/python bench/ingest.py --sizes 500 2000 --running-mode multi_processing --num-shards 4

Measured 2026-12-03, 2 idle cores (AMD EPYC Zen 4), bytecode compiled (make setup), beam_over_loop:
  threads (the default): 10,000: 1.35, 1.40, 1.31, 1.35 (four runs; Beam 18.1-20.2 s); 2,000: 1.13, 1.15.
  worker processes: 10,000: 1.26, 1.05, 1.41, 1.38; 2,000: 0.68, 0.85.
  Loop: ~2.4-3.0 ms of CPU per image, a third of it GZIP deflating JPEG/PNG bytes that do not compress (-2%).
  Earlier figures (0.86x at 10,000) came from a machine shared with other work (load 2-4).
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_seconds():
    """User+system CPU of this process and of its finished children (Beam's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_dataset(data_dir, num_images, min_size, max_size, seed):
    """The synthetic tree (80% train, 20% val), reused when one with the same arguments exists."""
    from data.synthetic import generate_voc_dataset

    root = os.path.join(data_dir, f"n{num_images}_s{min_size}-{max_size}_seed{seed}")
    stamp = os.path.join(root, "done")
    if not os.path.exists(stamp):
        shutil.rmtree(root, ignore_errors=True)
        num_val = num_images // 5
        generate_voc_dataset(
            root,
            num_train=num_images - num_val,
            num_val=num_val,
            seed=seed,
            min_size=min_size,
            max_size=max_size,
            progress=True,
        )
        open(stamp, "w").close()
    return os.path.join(root, "VOC2012")


def run_loop(voc_root, splits, out_dir):
    """Single process: every sample read, validated, encoded and written, one after another.

    The same per-sample functions as the Beam workers (load_sample, example_bytes); the records go
    through TensorFlow's TFRecordWriter, the fastest single-process GZIP TFRecord writer at hand.
    """
    import tensorflow as tf

    from data.splits import resolve_recipe
    from data.tfrecord import BadSample, example_bytes, load_sample

    written = rejected = 0
    started = time.perf_counter()
    for split, recipe in splits.items():
        os.makedirs(os.path.join(out_dir, f"Split-{split}"), exist_ok=True)
        path = os.path.join(out_dir, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for ref in resolve_recipe(recipe, voc_root=voc_root):
                try:
                    writer.write(example_bytes(load_sample(ref)))
                    written += 1
                except BadSample:
                    rejected += 1
    return time.perf_counter() - started, written, rejected


def run_beam(voc_root, splits, out_dir, beam_args, num_shards):
    """The VocExampleGen executor as TFX runs it.

    Returns (seconds in Do, CPU seconds in Do and its worker processes, seconds building the executor, report).
    """
    from tfx.dsl.components.base import base_beam_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.voc_example_gen import component, executor

    artifact = standard_artifacts.Examples()
    artifact.uri = out_dir
    exec_properties = {
        "input_config": proto_utils.proto_to_json(component.make_input_config(splits)),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "voc_root": voc_root,
        "sbd_root": None,
        "max_rejected_fraction": 0.05,
        "num_shards": num_shards,
    }
    started = time.perf_counter()
    # Building the executor includes TFX packaging itself for remote workers (an sdist; the DirectRunner
    # does not use it): a fixed cost of every Beam component, reported apart.
    ex = executor.Executor(base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=out_dir))
    init_s = time.perf_counter() - started
    cpu, started = cpu_seconds(), time.perf_counter()
    ex.Do({}, {"examples": [artifact]}, exec_properties)
    do_s, do_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    with open(os.path.join(out_dir, executor.REPORT_FILE)) as f:
        report = json.load(f)
    return do_s, do_cpu, init_s, report


def read_all_files(voc_root, ids):
    """Reads every image and mask once, so that neither side is timed reading from a cold disk."""
    for image_id in ids:
        for path in (f"JPEGImages/{image_id}.jpg", f"SegmentationClass/{image_id}.png"):
            with open(os.path.join(voc_root, path), "rb") as f:
                f.read()


def worker_bytecode_cached():
    """Whether a Beam worker process finds compiled bytecode for Beam (its ~10 s start-up is mostly compiling it)."""
    import importlib.util

    import apache_beam

    return os.path.exists(importlib.util.cache_from_source(apache_beam.__file__))


def use_pycache_prefix(prefix):
    """Compiled bytecode under `prefix` for this process and the Beam workers it starts, cached once before timing.

    Emulates a virtualenv installed with compiled bytecode (`uv pip install --compile-bytecode`; plain pip, or
    any install whose site-packages Python may write .pyc files to after the first run) where it has none and
    PYTHONDONTWRITEBYTECODE forbids writing it: every worker then compiles Beam's sources at start-up.
    """
    import subprocess

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix = os.path.abspath(prefix)
    sys.dont_write_bytecode = False
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore",
            "-c",
            "import apache_beam.runners.worker.sdk_worker_main, components.voc_example_gen.transforms",
        ],
        cwd=repo,
        check=True,
    )


def read_back(out_dir):
    """{image/filename: serialized Example} of every GZIP TFRecord under out_dir (TensorFlow's reader)."""
    import glob

    import tensorflow as tf

    from data.tfrecord import IMAGE_FILENAME, parse_light_example

    records = {}
    for record in tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(out_dir, "Split-*", "*.gz"))), compression_type="GZIP"
    ):
        data = record.numpy()
        records[parse_light_example(data).features.feature[IMAGE_FILENAME].bytes_list.value[0]] = data
    return records


def marginal_rates(runs):
    """Per-image rate between consecutive sizes of one mode's runs, and the fixed cost it implies (seconds at 0
    images), added to the larger run."""
    for small, large in zip(runs, runs[1:]):
        extra = large["images"] - small["images"]
        for side in ("loop", "beam"):
            rate = extra / max(large[f"{side}_seconds"] - small[f"{side}_seconds"], 1e-6)
            large[f"{side}_marginal_images_per_second"] = round(rate, 1)
            large[f"{side}_fixed_seconds"] = round(large[f"{side}_seconds"] - large["images"] / rate, 1)
        large["beam_over_loop_marginal"] = round(
            large["beam_marginal_images_per_second"] / large["loop_marginal_images_per_second"], 2
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="numbers of images: one loop run and one Beam run for each",
    )
    parser.add_argument("--min-size", type=int, default=300, help="image sides drawn from [min, max] (VOC: ~500x375)")
    parser.add_argument("--max-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers of the Beam run")
    parser.add_argument(
        "--running-mode",
        nargs="+",
        default=["multi_threading", "multi_processing"],
        choices=["multi_processing", "multi_threading"],
        help="--direct_running_mode of the Beam runs, one run each (default: the pipeline's ingest default, "
        "threads, then worker processes)",
    )
    parser.add_argument("--num-shards", type=int, default=0, help="output files per split (0: runner decides)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "deeplab_bench_ingest"))
    parser.add_argument(
        "--check-records",
        action="store_true",
        help="also read both outputs back and check that they hold the same records",
    )
    parser.add_argument(
        "--pycache-prefix",
        metavar="DIR",
        help="compiled-bytecode cache for this process and the Beam workers (PYTHONPYCACHEPREFIX), "
        "filled before timing: measures a virtualenv with compiled bytecode where this one "
        "has none and PYTHONDONTWRITEBYTECODE is set (see worker_bytecode_cached in the output)",
    )
    parser.add_argument("--output", help="also write the JSON result here")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    if args.pycache_prefix:
        use_pycache_prefix(args.pycache_prefix)

    import logging

    logging.basicConfig(level=logging.WARNING)
    # One tree of the largest size; each size takes its first N ids.
    voc_root = make_dataset(args.data_dir, sizes[-1], args.min_size, args.max_size, args.seed)
    # Imports first, so that neither side's CPU or wall time includes them.
    import tensorflow  # noqa: F401  pylint: disable=unused-import

    from components.voc_example_gen import executor  # noqa: F401  pylint: disable=unused-import

    work = tempfile.mkdtemp(prefix="bench_ingest_")
    ids = open(os.path.join(voc_root, "ImageSets/Segmentation/trainval.txt")).read().split()
    modes = list(dict.fromkeys(args.running_mode))
    read_all_files(voc_root, ids[: sizes[-1]])
    load_before = os.getloadavg()
    usable_cores = min(os.cpu_count(), args.workers + 1)  # the workers and the launcher
    runs = []
    try:
        for size, mode in ((size, mode) for size in sizes for mode in modes):
            beam_args = [f"--direct_running_mode={mode}", f"--direct_num_workers={args.workers}"]
            id_list = os.path.join(work, f"ids_{size}.txt")
            with open(id_list, "w") as f:
                f.write("\n".join(ids[:size]) + "\n")
            splits = {"all": f"file:{id_list}"}
            loop_dir, beam_dir = os.path.join(work, f"loop_{size}"), os.path.join(work, f"beam_{size}_{mode}")
            load = os.getloadavg()[0]
            if mode == modes[0]:  # one loop run per size, the baseline of every mode's Beam run
                cpu = cpu_seconds()
                loop_s, loop_written, _ = run_loop(voc_root, splits, loop_dir)
                loop_cpu = cpu_seconds() - cpu
            # CPU of Do only: building the executor runs a setup.py sdist subprocess (see run_beam).
            beam_s, beam_cpu, init_s, report = run_beam(voc_root, splits, beam_dir, beam_args, args.num_shards)
            beam_written = sum(s["examples"] for s in report["splits"].values())
            assert beam_written == loop_written == min(size, len(ids)), (size, beam_written, loop_written)
            run = {
                "images": loop_written,
                "running_mode": mode,
                "loop_seconds": round(loop_s, 2),
                "beam_seconds": round(beam_s, 2),
                "beam_over_loop": round(loop_s / beam_s, 2),
                "loop_images_per_second": round(loop_written / loop_s, 1),
                "beam_images_per_second": round(beam_written / beam_s, 1),
                # CPU of the launcher and of the worker processes it started: compare with the loop's
                # to tell per-record overhead from waiting for a shared CPU.
                "loop_cpu_seconds": round(loop_cpu, 1),
                "beam_cpu_seconds": round(beam_cpu, 1),
                # The ratio on idle cores if Beam's CPU spread perfectly over the cores it can use (the
                # loop being CPU-bound): an upper estimate, for a machine shared with other work.
                "beam_over_loop_idle_cpu_estimate": round(loop_cpu / (beam_cpu / usable_cores), 2),
                "beam_executor_init_seconds": round(init_s, 2),
                "beam_shards": len(os.listdir(os.path.join(beam_dir, "Split-all"))),
                "load_average_1min_before": round(load, 2),
            }
            if args.check_records:
                loop_records, beam_records = read_back(loop_dir), read_back(beam_dir)
                assert loop_records == beam_records, "the loop and Beam wrote different records"
                run["records_identical"] = True
            runs.append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
            shutil.rmtree(beam_dir, ignore_errors=True)
            if mode == modes[-1]:
                shutil.rmtree(loop_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for mode in modes:
        marginal_rates([run for run in runs if run["running_mode"] == mode])
    result = {
        "runs": runs,
        "beam_over_loop": {f"{run['images']} {run['running_mode']}": run["beam_over_loop"] for run in runs},
        "image_size_range": [args.min_size, args.max_size],
        "direct_num_workers": args.workers,
        # False: each Beam worker compiles Beam's sources when it starts (~8 s of CPU instead of ~3 s).
        "worker_bytecode_cached": worker_bytecode_cached(),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
