"""Throughput of `deeplab infer` (Beam RunInference, pipeline/infer.py) against the same model called in a plain
Python loop, same run, on demo-size images.

  .venv/bin/python bench/bulk_infer.py --out /tmp/bulk_infer [--images 1000 --batch-size 8]

Writes --images synthetic JPEGs of the demo's sizes (160..320 px a side, `data.synthetic.render_sample`), exports
an untrained model of the `demo` preset's network (MobileNetV2 alpha 0.35, ASPP 64; weights do not matter for
speed, float32), then:
  loop      for each file: read, the SavedModel's serving_png signature on one image, the same label PNG + index
            record as the Beam job writes (pipeline.infer's writer);
  beam      pipeline.infer.run_infer with the in-process DirectRunner (batches of --batch-size, grouped by size
            inside the signature);
  beam_mp   the same with --direct_running_mode=multi_processing --direct_num_workers=2 (two worker processes,
            each loading the model).
Prints and writes OUT/bulk_infer.json: seconds, images/s and the ratio against the loop.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_images(folder, count, seed=0, fixed_size=None):
    import numpy as np

    from data import synthetic
    from pipeline import configs

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        if os.path.exists(path):
            continue
        h, w = fixed_size or (int(v) for v in rng.integers(configs.DEMO_MIN_SIZE, configs.DEMO_MAX_SIZE + 1, 2))
        with open(path, "wb") as f:
            f.write(synthetic.encode_jpeg(synthetic.render_sample(rng, h, w)[0]))


def plain_loop(model_dir, paths, output_dir):
    import tensorflow as tf

    from pipeline import infer

    signature = tf.saved_model.load(model_dir).signatures[infer.SIGNATURE]
    writer = infer._Writer(output_dir, infer.model_label_map(model_dir), overlay=False)
    rows = []
    started = time.time()
    for path, name in infer.output_names(paths).items():
        with open(path, "rb") as f:
            data = f.read()
        t = time.perf_counter()
        out = signature(images=tf.constant([data]))
        ms = (time.perf_counter() - t) * 1000.0
        answer = {
            "png": out["segmentation_png"][0].numpy(),
            "height": int(out["height"][0]),
            "width": int(out["width"][0]),
            "batch_ms": ms,
            "batch_size": 1,
        }
        rows.append(writer(path, name, answer, data))
    with open(os.path.join(output_dir, "index.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return time.time() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--fixed-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="all images of this size (a camera's), so that batches share model calls (default: demo's varied sizes)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["loop", "beam", "beam_mp"])
    args = parser.parse_args(argv)

    from bench.report import write_report
    from models import model_io
    from models.export import export_serving_model
    from models.hparams import preset
    from pipeline import infer

    os.makedirs(args.out, exist_ok=True)
    images = os.path.join(args.out, "images" if not args.fixed_size else "images_{}x{}".format(*args.fixed_size))
    write_images(images, args.images, fixed_size=args.fixed_size)
    paths = infer.list_images(images)[: args.images]
    model_dir = os.path.join(args.out, "model")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        config = preset("demo").model
        model = model_io.randomize_weights(model_io.build_model(config, "float32"))
        export_serving_model(model, model_dir, config=config, precision="float32", warmup_sizes=())
    results = {}
    if "loop" not in args.skip:
        out = os.path.join(args.out, "loop_out")
        shutil.rmtree(out, ignore_errors=True)
        seconds = plain_loop(model_dir, paths, out)
        results["loop"] = {"seconds": round(seconds, 1), "images_per_s": round(len(paths) / seconds, 2)}
    variants = {"beam": [], "beam_mp": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}
    for name, beam_args in variants.items():
        if name in args.skip:
            continue
        out = os.path.join(args.out, f"{name}_out")
        shutil.rmtree(out, ignore_errors=True)
        started = time.time()
        report = infer.run_infer(model_dir, images, out, batch_size=args.batch_size, beam_args=beam_args)
        seconds = time.time() - started
        results[name] = {
            "seconds": round(seconds, 1),
            "images_per_s": round(report["segmented"] / seconds, 2),
            "segmented": report["segmented"],
            "mean_batch": report["mean_batch"],
        }
    if "loop" in results:
        for row in results.values():
            row["ratio_vs_loop"] = round(row["images_per_s"] / results["loop"]["images_per_s"], 2)
    write_report(
        os.path.join(args.out, "bulk_infer.json"),
        results,
        images=len(paths),
        sizes="fixed {}x{}".format(*args.fixed_size) if args.fixed_size else "demo: 160..320 px a side",
        batch_size=args.batch_size,
    )


if __name__ == "__main__":
    main()
