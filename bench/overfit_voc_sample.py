"""Overfit the 19 real VOC 2012 images of ../shared/voc2012-sample (trainval) and report training mIoU.

  .venv/bin/python bench/overfit_voc_sample.py [--voc-root ../shared/voc2012-sample] [--workdir /tmp/deeplab_overfit]
                                               [--set train_steps=800 ...]

A sanity check that the real data path (JPEG + palette PNG with 255 borders -> TFRecords -> input
pipeline -> loss that ignores 255 -> whole-image mIoU) can be fitted: the target is training mIoU
>= 0.90 measured on the whole training images (no ImageNet weights: random init). Prints and writes
<workdir>/overfit_voc_sample.json; prediction pictures are in <workdir>/run/predictions/.

Measured 2026-11-24 (2 shared CPU cores, load ~3.5, random init, mixed_bfloat16, whole-image mIoU on the
19 training images, inference-mode BN):
  crop 257, scale 0.75-1.0 + flip, batch 8, adam 1e-3, 600 steps: 0.70 in 727 s (0.44, 0.59, 0.68, 0.70).
  same with bn_decay 0.99, lr 2e-3: training-mode mIoU 0.79 but whole-image mIoU 0.018 (moving statistics lag).
  output_stride 8, crop 321, no scale/flip, batch 4, adam 4e-3 (30 warm-up steps), 1200 steps (the
  defaults below): 0.9166 in 865 s -- TARGET REACHED (0.49, 0.82, 0.86, 0.89, 0.91, 0.92 per 200 steps;
  load 1.3-2.6), command: .venv/bin/python bench/overfit_voc_sample.py
  output_stride 16, crop 385, same otherwise, 1600 steps: 0.8788 in 881 s
  (0.67, 0.75, 0.83, 0.85, 0.85, 0.87, 0.87, 0.88 per 200 steps; training-mode crop mIoU 0.98)
  crop 513 (every crop is the whole image plus mean-pixel padding), batch 4, adam 5e-3: training-mode
  0.90 but whole-image 0.54 after 400 steps (stopped): the padding most likely shifts the image-pooling
  average, so crops that need little padding match the unpadded whole-image evaluation better.
  crop 305 (no padding at all: the smallest image side is 319), batch 4, adam 4e-3, 1800 steps: 0.8755
  in 652 s (0.32, 0.76, 0.81, 0.79, 0.86, 0.87, 0.88, 0.88 per 225 steps; training-mode 0.95).
At output stride 16 the whole-image figure stalls near 0.88 although the crops fit (loss 0.016): its
coarse logits cap thin classes (bicycle, bottle); output stride 8 clears the 0.90 target.

Measured 2026-12-06 (2-core Intel Xeon with AMX, mixed_bfloat16 by `auto`, per-tap atrous convolutions by `auto`,
MobileNetV2 BN epsilon 1e-3; load ~2; bench/RESULTS.md rows 67-71), the defaults above, 1200 steps:
  V3, seeds 0 / 1 / 2: 0.9097 / 0.9065 / 0.9171 (mean 0.9111, sd 0.0054); seed 0 with `--set bn_epsilon=1e-5`
  (the epsilon before 2026-12-02): 0.9105; seed 0 with `--set atrous_impl=stock` (the convolution before the
  per-tap path): 0.9090. Five runs, 0.9065-0.9171: neither change moves the figure beyond the run-to-run spread,
  and 0.9166 (2026-11-24) is inside it. The same seed does not give the same run (the parallel input pipeline feeds
  the cache and the shuffle in arrival order; the first epoch of seed 0 read 0.53, 0.65 and 0.37 in three runs),
  so judge the target on several seeds: `--seeds 0 1 2` (the JSON gives the mean, min, max and sd).
  DeepLabV3+ (`--set decoder=v3plus`), seed 0, right after V3 seed 0: 0.8795 in 1069 s fit against V3's 0.9097
  in 907 s: at output stride 8 the fresh decoder is still climbing after 1200 steps (0.867 -> 0.879 in the last
  epoch, V3 flat). At output stride 16 (`--set output_stride=16`), seed 0: V3+ 0.8857 in 553 s, V3 0.8820 in 443 s.
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERFIT = dict(
    backbone="mobilenet_v2",
    alpha=0.5,
    output_stride=8,
    aspp_filters=128,
    weights=None,
    crop_size=321,
    min_scale=1.0,
    max_scale=1.0,
    flip=False,
    batch_size=4,
    train_steps=1200,
    steps_per_epoch=200,
    optimizer="adam",
    learning_rate=0.004,
    warmup_steps=30,
    weight_decay=0.0,
    bn_decay=0.9,
    precision="auto",
    cache_decoded=True,
    checkpoint_every=400,
    log_images=3,
)


def main(argv=None):
    from models.hparams import parse_assignment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc-root", default=os.path.join(REPO, "..", "shared", "voc2012-sample"))
    parser.add_argument("--workdir", default="/tmp/deeplab_overfit_voc_sample")
    parser.add_argument("--split", default="trainval")
    parser.add_argument("--set", type=parse_assignment, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="one training per seed, one after the other (default: the --set seed, else 0); the target applies "
        "to their mean, and the spread is reported",
    )
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    import logging
    import statistics

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from bench.examples_from_voc import write_examples
    from bench.train_synthetic import timed_train
    from models import hparams as hparams_lib

    values = {**OVERFIT, **dict(args.set)}
    seeds = args.seeds or [int(values.get("seed", 0))]
    examples = os.path.join(args.workdir, "examples")
    shutil.rmtree(args.workdir, ignore_errors=True)
    stats = write_examples(args.voc_root, examples, splits=(args.split,))
    split_dir = os.path.join(examples, f"Split-{args.split}")
    runs = []
    for seed in seeds:
        hp = hparams_lib.preset("paper", **{**values, "seed": seed})
        run_dir = os.path.join(args.workdir, "run" if len(seeds) == 1 else f"run-seed{seed}")
        # Training mIoU: the evaluation split IS the training split (val_miou_per_epoch is on it too).
        report, figures = timed_train(hp, split_dir, split_dir, run_dir, args.verbose)
        runs.append({"seed": seed, "train_miou_whole_images": round(report["val_miou"], 4), **figures})
    mious = [r["train_miou_whole_images"] for r in runs]
    mean = statistics.mean(mious)
    result = {
        "images": stats[args.split],
        "seeds": seeds,
        "train_miou_whole_images": round(mean, 4),  # the mean over the seeds
        "min": min(mious),
        "max": max(mious),
        "sd": round(statistics.stdev(mious), 4) if len(mious) > 1 else None,
        "target": 0.90,
        "reached": mean >= 0.90,
        **(runs[0] if len(runs) == 1 else {"runs": runs}),
    }
    with open(os.path.join(args.workdir, "overfit_voc_sample.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0 if result["reached"] else 1


if __name__ == "__main__":
    sys.exit(main())
