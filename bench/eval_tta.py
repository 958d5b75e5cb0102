"""Cost of test-time augmentation (models/inference.py), as ratios against whole-image inference
measured in the same run, on a DeepLab V3 from models.deeplab (weights do not matter for speed).

  .venv/bin/python bench/eval_tta.py --out /tmp/eval_tta [--backbone mobilenet_v2 --alpha 0.35
      --size 320 240 --images 4 --crop 193]

Writes OUT/eval_tta.json (seconds per image and ratio per configuration, load average before and
after: the CPU may be shared) and OUT/eval_tta.png (bar chart of the ratios).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def configs(crop):
    from models.inference import TTAConfig

    return {
        "whole": TTAConfig(),
        "flip": TTAConfig(flip=True),
        "scales 0.75/1/1.25": TTAConfig(scales=(0.75, 1.0, 1.25)),
        "6 scales + flip (paper)": TTAConfig(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip=True),
        f"sliding {crop}": TTAConfig(mode="sliding", crop_size=crop),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    parser.add_argument("--images", type=int, default=4, help="timed images per configuration")
    parser.add_argument("--crop", type=int, default=193, help="sliding-window crop")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from models.config import ModelConfig
    from models.deeplab import build_deeplab_v3
    from models.inference import predict_labels

    load_before = os.getloadavg()
    kwargs = {"alpha": args.alpha} if args.backbone == "mobilenet_v2" else {}
    model = build_deeplab_v3(ModelConfig(backbone=args.backbone, **kwargs))
    w, h = args.size
    images = np.random.default_rng(0).uniform(0, 255, size=(args.images, h, w, 3)).astype(np.float32)
    rows = {}
    for name, tta in configs(args.crop).items():
        fn = tf.function(
            lambda x, tta=tta: predict_labels(lambda im: model(im, training=False), x, **tta.kwargs()),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        )
        fn(images[:1]).numpy()  # trace + warm-up, not timed
        start = time.perf_counter()
        for i in range(args.images):
            fn(images[i : i + 1]).numpy()
        rows[name] = {"seconds_per_image": (time.perf_counter() - start) / args.images, "tta": tta.to_json_dict()}
        print(f"{name:28s} {rows[name]['seconds_per_image']:.3f} s/image", flush=True)
    base = rows["whole"]["seconds_per_image"]
    for row in rows.values():
        row["ratio_vs_whole"] = row["seconds_per_image"] / base
    result = {
        "backbone": args.backbone,
        "alpha": args.alpha,
        "image_size_wh": [w, h],
        "images": args.images,
        "configs": rows,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "eval_tta.json"), "w") as f:
        json.dump(result, f, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(rows)
    ax.barh(names, [rows[n]["ratio_vs_whole"] for n in names], color="#3b7dd8")
    ax.set_xlabel("time per image / whole-image time")
    ax.set_title(f"TTA cost, {args.backbone} {w}x{h} (whole = {base:.3f} s/image)")
    fig.savefig(os.path.join(args.out, "eval_tta.png"), dpi=110, bbox_inches="tight")
    print(json.dumps({n: round(r["ratio_vs_whole"], 2) for n, r in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
