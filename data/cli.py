"""`deeplab synth`: write a synthetic VOCdevkit dataset (see data/synthetic.py).

With --label-map FILE / --num-classes N the dataset uses another label map, and --layout generic writes
OUTPUT/dataset/{images,masks,splits} (+ label_map.json) for data.generic.GenericDataset.

Besides the dataset it writes OUTPUT/synth_summary.json (counts, classes, sizes) and
OUTPUT/synth_preview.png (images, masks and overlays of the first samples).
"""

import json
import os

SUMMARY_FILE = "synth_summary.json"
PREVIEW_FILE = "synth_preview.png"


def add_arguments(command, parser):
    parser.add_argument("--output", required=True, help="folder to write; the dataset lands in OUTPUT/VOC2012")
    parser.add_argument("--num-train", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--num-val", type=int, default=50, help="validation images (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> byte-identical files")
    parser.add_argument("--min-size", type=int, default=160, help="smallest image side in px (default 160)")
    parser.add_argument("--max-size", type=int, default=320, help="largest image side in px (default 320)")
    parser.add_argument(
        "--defects",
        action="store_true",
        help="also list deliberately broken samples in train (truncated JPEG, RGB mask, ...) to "
        "exercise the ingest's skip-and-count path; see data.synthetic.DEFECTS",
    )
    parser.add_argument(
        "--sbd",
        action="store_true",
        help="write a synthetic SBD tree (OUTPUT/sbd/dataset, sharing half of the VOC ids) besides the VOC tree",
    )
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--label-map",
        metavar="FILE",
        help="classes of the dataset: a label map JSON/YAML file (see data/label_map.py) or a "
        "built-in name (voc, cityscapes, ade20k); default VOC",
    )
    classes.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="a made-up label map of N classes (background, class_1..class_{N-1}; VOC colour-map "
        "colours, 255 = ignore)",
    )
    parser.add_argument(
        "--layout",
        choices=("voc", "generic"),
        default="voc",
        help="voc: OUTPUT/VOC2012 (VOCdevkit layout, default); generic: OUTPUT/dataset/{images,masks,"
        "splits} for data.generic.GenericDataset",
    )
    parser.add_argument(
        "--rgb-masks",
        action="store_true",
        help="with --layout generic: write masks as RGB colour PNGs (the label map's palette) instead of class ids",
    )


def _summarize(
    root, splits, load_mask, preview_row, class_names, num_labelled, ignore, preview_path, preview_count, header
):
    """The summary both layouts share: `load_mask(id)` gives the counted ids, `preview_row(id, label)` a grid row;
    class shares are over ids below `num_labelled`, and `header` keys follow "root"."""
    import numpy as np

    pixels = np.zeros(256, dtype=np.int64)
    images_with = np.zeros(256, dtype=np.int64)
    heights, widths, rows = [], [], []
    for image_id in splits["train"] + splits["val"]:
        label = load_mask(image_id)
        counts = np.bincount(label.ravel(), minlength=256)
        pixels += counts
        images_with += counts > 0
        heights.append(label.shape[0])
        widths.append(label.shape[1])
        if preview_path and len(rows) < preview_count:
            rows.append(preview_row(image_id, label))
    labelled = pixels[:num_labelled].sum()
    summary = {
        "root": root,
        **header,
        "splits": {name: len(ids) for name, ids in splits.items()},
        "classes": {
            class_names[c]: {
                "id": c,
                "images": int(images_with[c]),
                "pixel_share": round(float(pixels[c] / max(labelled, 1)), 4),
            }
            for c in range(len(class_names))
            if images_with[c]
        },
        "ignore_pixel_share": round(float(pixels[ignore] / max(pixels.sum(), 1)), 4),
        "height": [min(heights, default=0), max(heights, default=0)],
        "width": [min(widths, default=0), max(widths, default=0)],
    }
    if rows:
        from data.visualize import save_grid

        save_grid(rows, preview_path, titles=["image", "mask", "overlay"])
    return summary


def summarize(voc_root, preview_path=None, preview_count=6):
    """Per-split counts, class pixel shares and image sizes of a VOC tree; optionally a preview grid PNG."""
    import numpy as np
    from PIL import Image

    from data.visualize import overlay
    from data.voc import IGNORE_LABEL, VOC_CLASSES, VocDevkit

    voc = VocDevkit(voc_root)

    def preview_row(image_id, label):
        image = np.asarray(Image.open(voc.image_path(image_id)).convert("RGB"))
        return [image, label, overlay(image, label)]

    return _summarize(
        voc.root,
        {name: voc.split_ids(name) for name in ("train", "val")},
        lambda image_id: np.asarray(Image.open(voc.mask_path(image_id))),
        preview_row,
        VOC_CLASSES,
        IGNORE_LABEL,  # every stored id below the ignore label counts as labelled
        IGNORE_LABEL,
        preview_path,
        preview_count,
        header={},
    )


def summarize_dataset(dataset, preview_path=None, preview_count=6):
    """Like `summarize`, for a `data.labelled.LabelledDataset` (any label map): masks in train ids."""
    import numpy as np

    label_map = dataset.label_map

    def preview_row(image_id, label):
        image = dataset.load_image(image_id)
        colours = label_map.decode_mask(label)
        blend = image.astype(np.float32)
        shown = label != 0
        blend[shown] = 0.5 * blend[shown] + 0.5 * colours[shown]
        return [image, colours, np.round(blend).astype(np.uint8)]

    return _summarize(
        dataset.root,
        {name: dataset.split_ids(name) for name in ("train", "val")},
        dataset.load_mask,
        preview_row,
        label_map.names,
        label_map.num_classes,
        label_map.ignore_label,
        preview_path,
        preview_count,
        header={"label_map": label_map.name, "num_classes": label_map.num_classes},
    )


def _write_summary(output, summary):
    """OUTPUT/synth_summary.json plus the closing lines both `deeplab synth` paths print."""
    with open(os.path.join(output, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
    classes = ", ".join(f"{name} ({c['images']} images)" for name, c in summary["classes"].items())
    print(f"classes: {classes}")
    print(f"summary: {os.path.join(output, SUMMARY_FILE)}; preview: {os.path.join(output, PREVIEW_FILE)}")
    return 0


def _main_label_map(args):
    """`deeplab synth` with --label-map / --num-classes / --layout generic / --rgb-masks."""
    from data.generic import GenericDataset
    from data.label_map import LabelMap, LabelMapError
    from data.synthetic import generate_dataset

    if args.defects or args.sbd:
        raise SystemExit(
            "deeplab synth: --defects and --sbd are VOC-only; drop them or the --label-map/--num-classes/"
            "--layout/--rgb-masks flags"
        )
    if args.rgb_masks and args.layout != "generic":
        raise SystemExit("deeplab synth: --rgb-masks needs --layout generic")
    try:
        label_map = (
            LabelMap.synthetic(args.num_classes) if args.num_classes is not None else LabelMap.resolve(args.label_map)
        )
    except (LabelMapError, OSError, ValueError) as e:
        flag = "--num-classes" if args.num_classes is not None else f"--label-map {args.label_map}"
        raise SystemExit(f"deeplab synth: {flag}: {' '.join(str(e).split())}") from None
    root = generate_dataset(
        args.output, label_map=label_map, layout=args.layout, rgb_masks=args.rgb_masks, **_sample_args(args)
    )
    print(
        f"wrote {args.num_train} train + {args.num_val} val images to {root} ({args.layout} layout, label map "
        f"{label_map.name!r}: {label_map.num_classes} classes)"
    )
    if args.layout == "voc":
        dataset = GenericDataset(
            root,
            images_dir="JPEGImages",
            masks_dir="SegmentationClass",
            splits_dir="ImageSets/Segmentation",
            label_map=label_map,
        )
    else:
        dataset = GenericDataset(root, label_map=label_map)
    summary = summarize_dataset(dataset, preview_path=os.path.join(args.output, PREVIEW_FILE))
    summary["seed"] = args.seed
    summary["layout"] = args.layout
    return _write_summary(args.output, summary)


def _sample_args(args):
    """The arguments of data.synthetic's generators that the flags set: how many images, their sizes, the seed."""
    names = ("num_train", "num_val", "seed", "min_size", "max_size")
    return {**{name: getattr(args, name) for name in names}, "progress": True}


def main(command, args):
    from data.synthetic import add_defects, generate_sbd_dataset, generate_voc_dataset

    if (
        getattr(args, "label_map", None) is not None
        or getattr(args, "num_classes", None) is not None
        or getattr(args, "layout", "voc") != "voc"
        or getattr(args, "rgb_masks", False)
    ):
        return _main_label_map(args)

    root = generate_voc_dataset(args.output, **_sample_args(args))
    print(
        f"wrote {args.num_train} train + {args.num_val} val images to {root} (VOCdevkit layout; use --voc-root {root})"
    )
    summary = summarize(root, preview_path=os.path.join(args.output, PREVIEW_FILE))
    summary["seed"] = args.seed
    if args.defects:  # after summarize(): the broken files cannot be summarised
        summary["defects"] = add_defects(root, seed=args.seed)
        print(
            f"added {len(summary['defects'])} deliberately broken samples to train: "
            f"{sorted(set(summary['defects'].values()))}"
        )
    if args.sbd:
        # SBD ids start halfway through the VOC train ids so that overlap handling is exercised.
        sbd_root = generate_sbd_dataset(
            os.path.join(args.output, "sbd"),
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            min_size=args.min_size,
            max_size=args.max_size,
            first_index=args.num_train // 2 + 1,
            progress=True,
        )
        summary["sbd_root"] = sbd_root
        print(f"wrote {args.num_train} train + {args.num_val} val SBD images to {sbd_root} (use --sbd-root {sbd_root})")
    return _write_summary(args.output, summary)
