"""Latency of the TFLite interpreter (XNNPACK, all cores) against the SavedModel on this CPU, same model, same run.

  .venv/bin/python bench/tflite_latency.py --out /tmp/tflite_latency [--backbone mobilenet_v2 --alpha 1.0
      --input-size 513 --repeats 10 --quantize none float16 int8]

Builds an untrained DeepLab V3 of the given configuration (weights do not matter for speed), exports it as a
float32 SavedModel (`models.export`), converts it with models/tflite_export.py (int8 calibrated on 100 synthetic
images, `data.synthetic.render_sample`) and times one [1,S,S,3] image: the SavedModel's `logits` signature + argmax
(the parity gate's reference, TF's default threads: all cores) against each .tflite in
`tf.lite.Interpreter(num_threads=os.cpu_count())` and with one thread. Prints
and writes OUT/tflite_latency.json: median ms per image, ratio against the SavedModel, file sizes, load average.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _median_ms(fn, repeats):
    fn()  # warm-up (tracing, delegate set-up)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--input-size", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quantize", nargs="+", default=["none", "float16", "int8"])
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from bench.report import write_report
    from data import synthetic
    from models import model_io, tflite_export
    from models.config import ModelConfig
    from models.export import export_serving_model

    os.makedirs(args.out, exist_ok=True)
    size = args.input_size
    config = ModelConfig.from_dict({"backbone": args.backbone, "alpha": args.alpha})
    model = model_io.randomize_weights(model_io.build_model(config, "float32"), seed=0)
    saved = os.path.join(args.out, "saved_model")
    if not os.path.exists(os.path.join(saved, "saved_model.pb")):
        export_serving_model(model, saved, config=config, precision="float32", warmup_sizes=())
    rng = np.random.default_rng(0)
    image = synthetic.render_sample(rng, size, size)[0]
    reference = tflite_export.SavedModelLabels(saved)
    results = {"savedmodel": {"ms": _median_ms(lambda: reference.labels(image), args.repeats)}}
    representative = None
    for quantize in args.quantize:
        if quantize == "int8" and representative is None:
            images = [synthetic.render_sample(rng, size, size)[0] for _ in range(tflite_export.MIN_REPRESENTATIVE)]
            representative = [i[np.newaxis].astype(np.float32) for i in images]
        started = time.time()
        content = tflite_export.convert(model, size, quantize, representative if quantize == "int8" else None)
        seconds = time.time() - started
        segmenter = tflite_export.TfliteSegmenter(content)  # all cores, XNNPACK (TF 2.16's default delegate)
        agreement = float(np.mean(segmenter.labels(image) == reference.labels(image)))
        results[f"tflite_{quantize}"] = {
            "ms": _median_ms(lambda s=segmenter: s.labels(image), args.repeats),
            "mb": round(len(content) / 1e6, 2),
            "convert_s": round(seconds, 1),
            "pixel_agreement_one_image": round(agreement, 4),
        }
        # XNNPACK's thread pool spins while it waits for its threads: on cores other processes also use, one thread
        # can beat all of them by several times (bench/RESULTS.md), so both are measured.
        one = tflite_export.TfliteSegmenter(content, num_threads=1)
        results[f"tflite_{quantize}_1thread"] = {"ms": _median_ms(lambda s=one: s.labels(image), args.repeats)}
    base = results["savedmodel"]["ms"]
    for row in results.values():
        row["ms"] = round(row["ms"], 1)
        row["speedup_vs_savedmodel"] = round(base / row["ms"], 2)
    write_report(
        os.path.join(args.out, "tflite_latency.json"),
        results,
        model=config.to_dict(),
        input_size=size,
        repeats=args.repeats,
        threads=os.cpu_count(),
        tensorflow=tf.__version__,
    )


if __name__ == "__main__":
    main()
