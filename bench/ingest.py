"""Ingest throughput: VocExampleGen's Beam pipeline (DirectRunner, worker processes) vs a plain loop.

Both write the same records with the same data/ functions (data.splits.resolve_recipe ->
data.tfrecord.load_sample -> to_example -> GZIP TFRecords) from one synthetic VOCdevkit tree made
here (cached under --data-dir). The Beam side is the real executor (`Executor.Do`: pipeline build,
run, report), timed from the call to its return; the loop is timed the same way. Prints JSON.

    .venv/bin/python bench/ingest.py                      # 2,000 images, 2 workers
    .venv/bin/python bench/ingest.py --num-images 4000 --workers 2 --num-shards 4
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    parser.add_argument("--num-shards", type=int, default=0, help="output files per split (0: runner decides)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "deeplab_bench_ingest"))
    parser.add_argument("--output", help="also write the JSON result here")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    voc_root = make_dataset(args.data_dir, args.num_images, args.min_size, args.max_size, args.seed)
    splits = {"train": "voc_train", "val": "voc_val"}
    work = tempfile.mkdtemp(prefix="bench_ingest_")
    load_before = os.getloadavg()
    try:
        loop_s, loop_written, loop_rejected = run_loop(voc_root, splits, os.path.join(work, "loop"))
        beam_args = ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
        beam_s, init_s, report = run_beam(voc_root, splits, os.path.join(work, "beam"), beam_args, args.num_shards)
        shards = {s: len(os.listdir(os.path.join(work, "beam", f"Split-{s}"))) for s in splits}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    beam_written = sum(s["examples"] for s in report["splits"].values())
    assert beam_written == loop_written, (beam_written, loop_written)
    result = {
        "images": loop_written,
        "image_size_range": [args.min_size, args.max_size],
        "loop": {"seconds": round(loop_s, 2), "images_per_second": round(loop_written / loop_s, 1)},
        "beam": {"seconds": round(beam_s, 2), "images_per_second": round(beam_written / beam_s, 1),
                 "executor_init_seconds": round(init_s, 2), "args": beam_args, "shards_per_split": shards},
        "beam_over_loop": round((beam_written / beam_s) / (loop_written / loop_s), 2),
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
