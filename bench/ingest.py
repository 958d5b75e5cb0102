"""Ingest throughput: VocExampleGen's Beam pipeline (DirectRunner, worker processes) vs a plain loop.

Both write the same records with the same data/ functions (data.splits.resolve_recipe ->
data.tfrecord.load_sample -> to_example -> GZIP TFRecords) from one synthetic VOCdevkit tree made
here (cached under --data-dir). The Beam side is the real executor (`Executor.Do`: pipeline build,
run, report), timed from the call to its return; the loop is timed the same way. Prints JSON.

Each side runs twice, on all images and on the first --small-fraction of them, so that the fixed
cost (Beam worker processes starting: ~5 s of imports each) and the per-image rate ("marginal":
extra images / extra seconds) are reported apart; the headline ratio is the end-to-end one.

    .venv/bin/python bench/ingest.py                      # 2,000 images, 2 workers
    .venv/bin/python bench/ingest.py --num-images 4000 --workers 2 --num-shards 4
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
        generate_voc_dataset(root, num_train=num_images - num_val, num_val=num_val, seed=seed,
                             min_size=min_size, max_size=max_size, progress=True)
        open(stamp, "w").close()
    return os.path.join(root, "VOC2012")


def run_loop(voc_root, splits, out_dir):
    """Single process: every sample read, validated, encoded and written, one after another."""
    import tensorflow as tf

    from data.splits import resolve_recipe
    from data.tfrecord import BadSample, load_sample, to_example

    written = rejected = 0
    started = time.perf_counter()
    for split, recipe in splits.items():
        os.makedirs(os.path.join(out_dir, f"Split-{split}"), exist_ok=True)
        path = os.path.join(out_dir, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for ref in resolve_recipe(recipe, voc_root=voc_root):
                try:
                    writer.write(to_example(load_sample(ref)).SerializeToString())
                    written += 1
                except BadSample:
                    rejected += 1
    return time.perf_counter() - started, written, rejected


def run_beam(voc_root, splits, out_dir, beam_args, num_shards):
    """The VocExampleGen executor as TFX runs it; returns (seconds in Do, seconds building the executor, report)."""
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
        "voc_root": voc_root, "sbd_root": None, "max_rejected_fraction": 0.05, "num_shards": num_shards,
    }
    started = time.perf_counter()
    # Building the executor includes TFX packaging itself for remote workers (an sdist; the DirectRunner
    # does not use it): a fixed cost of every Beam component, reported apart.
    ex = executor.Executor(base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=out_dir))
    init_s = time.perf_counter() - started
    started = time.perf_counter()
    ex.Do({}, {"examples": [artifact]}, exec_properties)
    do_s = time.perf_counter() - started
    with open(os.path.join(out_dir, executor.REPORT_FILE)) as f:
        report = json.load(f)
    return do_s, init_s, report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--min-size", type=int, default=300, help="image sides drawn from [min, max] (VOC: ~500x375)")
    parser.add_argument("--max-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="--direct_num_workers of the Beam run")
    parser.add_argument("--running-mode", default="multi_processing", choices=["multi_processing", "multi_threading"],
                        help="--direct_running_mode of the Beam run")
    parser.add_argument("--num-shards", type=int, default=0, help="output files per split (0: runner decides)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "deeplab_bench_ingest"))
    parser.add_argument("--small-fraction", type=float, default=0.2,
                        help="size of the second, smaller run that separates fixed from per-image cost")
    parser.add_argument("--output", help="also write the JSON result here")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    voc_root = make_dataset(args.data_dir, args.num_images, args.min_size, args.max_size, args.seed)
    # Imports first, so that neither side's CPU or wall time includes them.
    import tensorflow  # noqa: F401  pylint: disable=unused-import
    from components.voc_example_gen import executor  # noqa: F401  pylint: disable=unused-import
    work = tempfile.mkdtemp(prefix="bench_ingest_")
    ids = open(os.path.join(voc_root, "ImageSets/Segmentation/trainval.txt")).read().split()
    small_list = os.path.join(work, "small.txt")
    with open(small_list, "w") as f:
        f.write("\n".join(ids[: max(1, int(len(ids) * args.small_fraction))]) + "\n")
    runs = {"all": {"all": "voc_trainval"}, "small": {"all": f"file:{small_list}"}}
    beam_args = [f"--direct_running_mode={args.running_mode}", f"--direct_num_workers={args.workers}"]
    load_before = os.getloadavg()
    timings = {}
    try:
        for name, splits in runs.items():
            cpu = cpu_seconds()
            loop_s, loop_written, _ = run_loop(voc_root, splits, os.path.join(work, f"loop_{name}"))
            loop_cpu, cpu = cpu_seconds() - cpu, cpu_seconds()
            beam_s, init_s, report = run_beam(voc_root, splits, os.path.join(work, f"beam_{name}"), beam_args,
                                              args.num_shards)
            beam_cpu = cpu_seconds() - cpu
            beam_written = sum(s["examples"] for s in report["splits"].values())
            assert beam_written == loop_written, (name, beam_written, loop_written)
            timings[name] = {"images": loop_written, "loop_s": loop_s, "beam_s": beam_s, "init_s": init_s,
                             "loop_cpu": loop_cpu, "beam_cpu": beam_cpu,
                             "shards": len(os.listdir(os.path.join(work, f"beam_{name}", "Split-all")))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    full, small = timings["all"], timings["small"]
    extra = full["images"] - small["images"]
    loop_marginal = extra / max(full["loop_s"] - small["loop_s"], 1e-6)
    beam_marginal = extra / max(full["beam_s"] - small["beam_s"], 1e-6)
    result = {
        "images": full["images"],
        "image_size_range": [args.min_size, args.max_size],
        "loop": {"seconds": round(full["loop_s"], 2), "images_per_second": round(full["images"] / full["loop_s"], 1),
                 "marginal_images_per_second": round(loop_marginal, 1), "cpu_seconds": round(full["loop_cpu"], 1)},
        "beam": {"seconds": round(full["beam_s"], 2), "images_per_second": round(full["images"] / full["beam_s"], 1),
                 "marginal_images_per_second": round(beam_marginal, 1),
                 "fixed_seconds": round(full["beam_s"] - full["images"] / beam_marginal, 1),
                 "executor_init_seconds": round(full["init_s"], 2), "args": beam_args,
                 # CPU of the launcher and of the worker processes it started: compare with the loop's
                 # to tell per-record overhead from waiting for a shared CPU.
                 "cpu_seconds": round(full["beam_cpu"], 1),
                 "cpu_seconds_small_run": round(small["beam_cpu"], 1),
                 "shards": full["shards"]},
        "beam_over_loop": round(full["loop_s"] / full["beam_s"], 2),
        "beam_over_loop_marginal": round(beam_marginal / loop_marginal, 2),
        "small_run": {"images": small["images"], "loop_s": round(small["loop_s"], 2), "beam_s": round(small["beam_s"], 2)},
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
