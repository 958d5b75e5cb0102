"""Batched evaluation vs the one-image path (issue 8): seconds per image of the Beam evaluation
(components/miou_evaluator) with batch_size 1 and N, on the same images in the same process, with
the confusion matrices compared for exact equality.

  .venv/bin/python bench/eval_batching.py --out /tmp/eval_batching [--images 60 --batch-size 8 --repeats 1]
      [--old-beam-eval OLD.py] [--beam-arg=--direct_running_mode=multi_processing ...]

--old-beam-eval times an earlier components/miou_evaluator/beam_eval.py too, in the same process on
the same images (e.g. `git show REV:components/miou_evaluator/beam_eval.py > /tmp/old_beam_eval.py`),
for a before/after ratio; its confusion matrix is compared too.

The model is the demo preset's DeepLab V3 (models.hparams.preset("demo"): MobileNetV2 0.35,
bfloat16) with random weights (speed does not depend on training), exported by
models.export.export_serving_model; the images are data.synthetic's (the demo's sizes, each image
its own size) and, as a second set, the same generator with only four sizes (like VOC, where most
images are 500x375 or 375x500), so batching has same-size images to group. Both are kept in OUT
and reused by later runs.

Besides the Beam runs (whose `seconds` include the model loads and the first call's tracing, as
the report's s/image does), a breakdown times, without Beam, the SavedModel load, the first call
and the steady-state per-image compute at batch 1 and N.

Writes OUT/eval_batching.json and prints it. The CPU may be shared: compare the ratios, and the
load averages recorded before and after.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def prepare(out, images, seed=0):
    """(model_dir, {set name: examples dir}); built once, reused when present."""
    from examples_from_voc import write_examples

    from data.synthetic import generate_voc_dataset
    from models.export import export_serving_model
    from models.hparams import preset
    from models.model_io import build_model, randomize_weights
    from models.precision import resolve_export_precision

    model_dir = os.path.join(out, "model")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        hparams = preset("demo")
        precision = "auto"  # bfloat16 only where native (models/precision.py), as the demo preset trains
        model = randomize_weights(build_model(hparams.model, resolve_export_precision(precision)[0]), seed=seed)
        export_serving_model(model, model_dir, hparams=hparams, warmup_sizes=())
    sets = {}
    for name, (lo, hi) in {"demo_sizes": (160, 320), "four_sizes": (250, 251)}.items():
        examples = os.path.join(out, f"examples_{name}_{images}")
        if not os.path.isdir(os.path.join(examples, "Split-val")):
            root = generate_voc_dataset(
                os.path.join(out, f"voc_{name}_{images}"),
                num_train=0,
                num_val=images,
                seed=seed,
                min_size=lo,
                max_size=hi,
            )
            write_examples(root, examples, splits=("val",))
        sets[name] = os.path.join(examples, "Split-val", "*")
    return model_dir, sets


def load_old_module(path):
    """An earlier beam_eval.py imported as module `old_beam_eval` (Beam pickles DoFns by module, so
    it is copied into a temp dir put on sys.path and PYTHONPATH, for multi_processing workers too)."""
    import importlib
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="old_beam_eval_")
    shutil.copy(path, os.path.join(directory, "old_beam_eval.py"))
    sys.path.insert(0, directory)
    os.environ["PYTHONPATH"] = os.pathsep.join([directory] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return importlib.import_module("old_beam_eval")


def beam_run(model_dir, pattern, tta, batch_size, staging, beam_args=(), module=None):
    from components.miou_evaluator import beam_eval

    kwargs = {} if module is not None else {"batch_size": batch_size}
    module = module or beam_eval
    raw = module.run_beam_evaluation(
        {beam_eval.CURRENT: model_dir},
        tta,
        staging_dir=staging,
        examples_pattern=pattern,
        num_gallery=0,
        beam_args=list(beam_args),
        **kwargs,
    )
    n = len(raw["images"][beam_eval.CURRENT])
    return {
        "seconds": raw["seconds"],
        "images": n,
        "seconds_per_image": raw["seconds"] / n,
        "model_calls": raw["counters"].get("model_calls"),
        "inference_ms_per_image_mean": raw["counters"].get("inference_ms_per_image_mean"),
    }, raw["cm"][beam_eval.CURRENT]


def breakdown(model_dir, pattern, tta, batch_size, limit=24):
    """Load / first call / steady-state compute of the evaluator's predictor, without Beam."""
    import glob

    import tensorflow as tf

    from components.miou_evaluator import beam_eval
    from data.tfrecord import parse_example_np

    records = [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]
    images = [parse_example_np(r)[0] for r in records[:limit]]
    start = time.perf_counter()
    predictor = beam_eval._load_predictor(model_dir, tta, 21)
    load = time.perf_counter() - start
    start = time.perf_counter()
    predictor.predict(images[0])
    first = time.perf_counter() - start
    predictor.predict_batch(images[:batch_size], batch_size)  # traces nothing new; warms the batch path
    timed = {}
    for b in (1, batch_size):
        start = time.perf_counter()
        predictor.predict_batch(images, b)
        timed[b] = (time.perf_counter() - start) / len(images)
    return {
        "load_seconds": load,
        "first_call_seconds": first,
        "steady_seconds_per_image_batch_1": timed[1],
        f"steady_seconds_per_image_batch_{batch_size}": timed[batch_size],
        "steady_ratio": timed[1] / timed[batch_size],
        "images": len(images),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per path; the best is kept")
    parser.add_argument("--sets", nargs="+", default=["demo_sizes", "four_sizes"])
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--old-beam-eval", help="an earlier beam_eval.py to time as well (before/after)")
    parser.add_argument("--beam-arg", action="append", default=[], help="Beam pipeline option, repeatable")
    args = parser.parse_args(argv)

    import numpy as np

    from models.inference import TTAConfig

    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    model_dir, sets = prepare(args.out, args.images)
    tta = TTAConfig()  # the demo's: EVAL_TTA "export" of a default export = whole image, scale 1
    result = {
        "model": "demo preset (MobileNetV2 0.35, bfloat16), random weights",
        "tta": tta.describe(),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "beam_args": args.beam_arg,
        "old_beam_eval": args.old_beam_eval,
        "loadavg_before": os.getloadavg(),
        "sets": {},
    }
    old = load_old_module(args.old_beam_eval) if args.old_beam_eval else None
    paths = {"one_image_path": (1, None), "batched": (args.batch_size, None)}
    if old is not None:
        paths = {"old": (1, old), **paths}
    for name in args.sets:
        runs, cms = {p: [] for p in paths}, {}
        for r in range(args.repeats):
            for path, (b, module) in paths.items():  # alternate, so drifting load hits every path alike
                row, cm = beam_run(
                    model_dir, sets[name], tta, b, os.path.join(args.out, "staging"), args.beam_arg, module
                )
                runs[path].append(row)
                cms.setdefault(path, cm)
                assert np.array_equal(cms[path], cm), "a path gave different integers on a repeat"
                print(
                    f"{name} {path} (batch {b}) run {r}: {row['seconds_per_image']:.3f} s/image "
                    f"({row['model_calls']} model calls)",
                    flush=True,
                )
        best = {p: min(rows, key=lambda x: x["seconds"]) for p, rows in runs.items()}
        spi = {p: row["seconds_per_image"] for p, row in best.items()}
        entry = dict(best)
        entry["ratio_one_image_over_batched"] = spi["one_image_path"] / spi["batched"]
        if old is not None:
            entry["ratio_old_over_batched"] = spi["old"] / spi["batched"]
            entry["ratio_old_over_one_image_path"] = spi["old"] / spi["one_image_path"]
        entry["confusion_matrices_identical"] = all(np.array_equal(cms["batched"], cm) for cm in cms.values())
        entry["all_runs"] = runs
        result["sets"][name] = entry
        if not args.no_breakdown:
            result["sets"][name]["breakdown_without_beam"] = breakdown(model_dir, sets[name], tta, args.batch_size)
    result["loadavg_after"] = os.getloadavg()
    result["wall_seconds"] = time.time() - started
    with open(os.path.join(args.out, "eval_batching.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0 if all(s["confusion_matrices_identical"] for s in result["sets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
