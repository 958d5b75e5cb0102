"""What the Transform costs and what it saves the Trainer (issue 19), one script, one run, same machine.

1. Transform (models/transform.py: the preprocessing_fn's full-pass analyzers on the Beam DirectRunner, in this
   process as `deeplab train` runs it, with the demo's Beam arguments) on demo-sized data: --demo-images synthetic
   images of 160..320 px, as `deeplab demo` makes them.
2. The same on --images small synthetic images (--min-size..--max-size px).
3. The Trainer's start-up work for class_weights=auto on those images: before (the Python pass over every record,
   what models.train.class_pixel_histogram did: data.label_histogram.histogram_of_examples) against after (read the
   analyzer counts from the transform graph); the weights must be identical.

    .venv/bin/python bench/transform_stats.py [--images 10000] [--demo-images 300] [--out bench/results/...json]
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def write_records(path, count, min_size, max_size, seed):
    """`count` synthetic image/mask pairs (data.synthetic) as one GZIP TFRecord file in the ingest's format (masks
    as single-channel PNGs of class ids)."""
    import tensorflow as tf

    from data import tfrecord
    from data.synthetic import encode_jpeg, render_sample

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for i in range(count):
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            image, label = render_sample(rng, height, width)
            sample = tfrecord.Sample(
                encode_jpeg(image), "jpeg", tfrecord._encode_png(label), height, width, f"img_{i:05d}", None
            )
            writer.write(tfrecord.example_bytes(sample))
    return os.path.dirname(path)


def time_transform(split, work, name):
    from models import transform

    started = time.perf_counter()
    graph = transform.analyze_files(split, os.path.join(work, name), 21, 255)
    seconds = time.perf_counter() - started
    return graph, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--min-size", type=int, default=24)
    parser.add_argument("--max-size", type=int, default=40)
    parser.add_argument("--demo-images", type=int, default=300)
    parser.add_argument("--out", default=os.path.join("bench", "results", "transform_stats.json"))
    args = parser.parse_args(argv)

    from data.label_histogram import histogram_of_examples
    from models import hparams as hparams_lib
    from models import input_pipeline
    from models import train as train_lib
    from models.losses import class_weights_from_histogram

    results = {"images": args.images, "image_sizes": [args.min_size, args.max_size], "demo_images": args.demo_images}
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        demo = write_records(os.path.join(work, "demo", "Split-train", "data.gz"), args.demo_images, 160, 320, 0)
        small = write_records(
            os.path.join(work, "small", "Split-train", "data.gz"), args.images, args.min_size, args.max_size, 1
        )
        print(f"data written in {time.perf_counter() - started:.0f} s", flush=True)

        _, results["transform_demo_s"] = time_transform(demo, work, "demo_graph")
        print(f"Transform, {args.demo_images} demo-sized images: {results['transform_demo_s']:.1f} s", flush=True)
        graph, results["transform_small_s"] = time_transform(small, work, "small_graph")
        print(f"Transform, {args.images} small images: {results['transform_small_s']:.1f} s", flush=True)

        hp = hparams_lib.preset("demo", class_weights="auto")
        # Before: the Trainer's own Python pass over every training record (models.train.class_pixel_histogram).
        started = time.perf_counter()
        files = input_pipeline.list_files(small)
        records = input_pipeline._record_dataset(files, deterministic=True, seed=0)
        histogram = histogram_of_examples(records.as_numpy_iterator())
        before = class_weights_from_histogram(histogram["pixels"][: hp.num_classes], "auto", num_classes=hp.num_classes)
        results["startup_before_s"] = time.perf_counter() - started
        # After: the analyzer counts read from the transform graph.
        started = time.perf_counter()
        statistics, _, _ = train_lib.dataset_statistics(hp, small, transform_graph=graph)
        after, _ = train_lib.resolve_class_weights(hp, statistics)
        results["startup_after_s"] = time.perf_counter() - started
        assert after == before, "the transform graph's weights differ from the Python pass's"
        results["weights_identical"] = True
        results["startup_speedup"] = results["startup_before_s"] / results["startup_after_s"]
        print(
            f"Trainer start-up, class_weights=auto on {args.images} images: Python pass "
            f"{results['startup_before_s']:.2f} s, transform graph {results['startup_after_s']:.2f} s "
            f"({results['startup_speedup']:.1f}x), identical weights",
            flush=True,
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
