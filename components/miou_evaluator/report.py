"""The evaluation report: evaluation.json, per_image.csv, PNG charts, a gallery, index.html and
TensorBoard scalars, all in one directory (the ModelEvaluation artifact, or `--output-dir`).

Files (relative names, so the folder can be copied or served as is):
  evaluation.json        every metric, per-class table, absent classes, TTA, counts, baseline
                         comparison and the blessing decision
  per_image.csv          per-image mIoU / pixel accuracy (and baseline mIoU when there is one)
  confusion_matrix.png   row-normalised confusion matrix (rows: ground truth), class names on axes
  per_class_iou.png      per-class IoU bars (baseline beside when there is one)
  gallery_best.png, gallery_worst.png   image | ground truth | prediction overlays
  index.html             all of the above on one page
  tensorboard/           the same scalars (and charts) as TensorBoard summaries
"""

import csv
import html
import io
import json
import os

import numpy as np

from components.miou_evaluator import metrics

EVALUATION_JSON = "evaluation.json"
PER_IMAGE_CSV = "per_image.csv"
CONFUSION_PNG = "confusion_matrix.png"
PER_CLASS_PNG = "per_class_iou.png"
GALLERY_PNG = {"best": "gallery_best.png", "worst": "gallery_worst.png"}
INDEX_HTML = "index.html"
TENSORBOARD_DIR = "tensorboard"
GALLERY_CELL_WIDTH = 240


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _write_bytes(path, data):
    with _gfile().GFile(path, "wb") as f:
        f.write(data)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on workers / CI
    import matplotlib.pyplot as plt

    return plt


def _fig_png(fig):
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def confusion_png(result):
    """PNG bytes of the row-normalised confusion matrix (an 'invalid' column only if it was used)."""
    plt = _pyplot()
    cm = np.asarray(result["confusion_matrix"], dtype=np.int64)
    names = list(result["class_names"])
    norm = metrics.normalized_confusion(cm)
    cols = names + ["(invalid)"]
    if result["invalid_predictions"] == 0:
        norm, cols = norm[:, : len(names)], names
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.42 * len(cols) + 2.5, 0.42 * n + 2))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    for t in range(n):
        for p in range(len(cols)):
            if norm[t, p] >= 0.005:
                ax.text(
                    p,
                    t,
                    f"{100 * norm[t, p]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[t, p] > 0.5 else "black",
                )
    ax.set_title(f"Confusion matrix, rows normalised (%) — mIoU {_pct(result['metrics']['miou'])}")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _fig_png(fig)


def per_class_png(result):
    """PNG bytes of a per-class IoU bar chart; absent classes are labelled, baseline bars beside."""
    plt = _pyplot()
    names = [c["name"] for c in result["per_class"]]
    ious = [c["iou"] if c["iou"] is not None else 0.0 for c in result["per_class"]]
    base = result.get("baseline")
    x = np.arange(len(names))
    width = 0.4 if base else 0.8
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(names) + 2), 4.5))
    ax.bar(x - (width / 2 if base else 0), ious, width, label="model", color="#3b7dd8")
    if base:
        b = [c["iou"] if c["iou"] is not None else 0.0 for c in base["per_class"]]
        ax.bar(x + width / 2, b, width, label="baseline", color="#bbbbbb")
    for i, c in enumerate(result["per_class"]):
        if c["iou"] is None:
            ax.text(i, 0.02, "absent", rotation=90, ha="center", va="bottom", fontsize=7, color="#888888")
    miou = result["metrics"]["miou"]
    if miou is not None:
        ax.axhline(miou, color="#d83b3b", linestyle="--", linewidth=1, label="mIoU")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title(f"Per-class IoU (mIoU {_pct(miou)} over {result['num_classes_present']} present classes)")
    return _fig_png(fig)


def gallery_png(items, path, mious=None, class_names=None, palette=None, ignore_label=None):
    """Rows of image | ground-truth overlay | prediction overlay for (filename, payload) items, where
    payload = (serialized Example, prediction PNG); `mious` maps filename -> mIoU for the titles.
    class_names / palette / ignore_label: the key's names, the overlay colours (uint8 [256, 3], a label map's
    `colors()`) and the ignore id; defaults VOC. Returns the path, or None without items."""
    import tempfile

    from PIL import Image

    from data.tfrecord import parse_example_np
    from data.visualize import legend, overlay, save_grid
    from data.voc import IGNORE_LABEL, VOC_CLASSES

    ignore = IGNORE_LABEL if ignore_label is None else int(ignore_label)
    names = VOC_CLASSES if class_names is None else list(class_names)
    rows, titles = [], []
    for filename, payload in items:
        if payload is None:
            continue
        serialized, pred_png = payload
        image, label, _ = parse_example_np(serialized)
        pred = np.asarray(Image.open(io.BytesIO(pred_png)))
        # Key: ground-truth classes first, then the most-predicted others; at most 12 rows.
        in_gt = set(np.unique(label).tolist())
        counts = np.bincount(pred.ravel().astype(np.int64), minlength=256)
        shown = sorted(
            (c for c in in_gt | set(np.flatnonzero(counts).tolist()) if c not in (0, ignore)),
            key=lambda c: (c not in in_gt, -counts[c], c),
        )
        key = legend(shown[:12] + [ignore], names, palette=palette, ignore_label=ignore)
        rows.append(
            [
                _fit(image),
                _fit(overlay(image, label, palette=palette, ignore_label=ignore)),
                _fit(overlay(image, pred, palette=palette, ignore_label=ignore)),
                key,
            ]
        )
        titles.append([filename, "ground truth", f"prediction, mIoU {_pct((mious or {}).get(filename))}", "classes"])
    if not rows:
        return None
    # save_grid writes local files: render locally, then copy (the output dir may be gs://).
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = save_grid(rows, os.path.join(tmp, "grid.png"), titles=titles)
        with open(tmp_path, "rb") as f:
            _write_bytes(path, f.read())
    return path


def _fit(picture, width=GALLERY_CELL_WIDTH):
    """Scales an RGB picture to `width` pixels wide: tiny images are readable, big ones stay light."""
    from PIL import Image

    h, w = picture.shape[:2]
    if w == width:
        return picture
    resample = Image.NEAREST if w < width else Image.BILINEAR
    return np.asarray(Image.fromarray(picture).resize((width, max(1, round(h * width / w))), resample))


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def per_image_csv(result):
    """CSV text of the per-image figures."""
    buf = io.StringIO()
    has_base = result.get("baseline") is not None
    fields = ["filename", "miou", "pixel_accuracy", "num_pixels", "classes"] + (["baseline_miou"] if has_base else [])
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in result["per_image"]:
        out = {k: row.get(k) for k in fields}
        out["classes"] = " ".join(row["classes"])
        writer.writerow(out)
    return buf.getvalue()


def _skipped_summary(data, escape=html.escape):
    """HTML such as '1 of 8 records (12.50%) skipped; <b>over</b> the gate's limit of 0.00%
    (max_eval_skipped_fraction 0.0)'."""
    text = (
        f"{data['images_skipped']} of {data.get('images_total', '?')} records "
        f"({_pct(data.get('skipped_fraction'))}) skipped"
    )
    if data.get("max_eval_skipped_fraction") is not None:
        allowed = data["max_eval_skipped_fraction"]
        verdict = "within" if (data.get("skipped_fraction") or 0.0) <= allowed else "<b>over</b>"
        text += (
            f"; {verdict} the gate's limit of {_pct(allowed)} "
            f"(max_eval_skipped_fraction {escape(repr(float(allowed)))})"
        )
    return text


def index_html(result, files):
    """Self-contained HTML page (no external resources) over the files written beside it."""
    e = html.escape
    m = result["metrics"]
    b = result.get("blessing")
    base = result.get("baseline")
    comp = result.get("comparison")
    rows = []
    for c in result["per_class"]:
        delta = ""
        if comp:
            d = comp["per_class_iou"][c["name"]]
            delta = f"<td>{'' if d is None else f'{100 * d:+.2f}'}</td>"
        rows.append(
            f"<tr{' class=absent' if not c['present'] else ''}><td>{c['id']}</td><td>{e(c['name'])}</td>"
            f"<td>{_pct(c['iou'])}</td><td>{_pct(c['accuracy'])}</td><td>{c['gt_pixels']:,}</td>"
            f"<td>{c['pred_pixels']:,}</td>{delta}</tr>"
        )
    headline = [
        (
            "mIoU (dataset-level, the standard VOC figure)",
            _pct(m["miou"]),
            None if not comp else comp["metrics"].get("miou"),
        ),
        ("pixel accuracy", _pct(m["pixel_accuracy"]), None if not comp else comp["metrics"].get("pixel_accuracy")),
        (
            "mean class accuracy",
            _pct(m["mean_class_accuracy"]),
            None if not comp else comp["metrics"].get("mean_class_accuracy"),
        ),
        (
            "frequency-weighted IoU",
            _pct(m["frequency_weighted_iou"]),
            None if not comp else comp["metrics"].get("frequency_weighted_iou"),
        ),
        (
            "per-image mean mIoU (reference-repo style, not comparable to mIoU)",
            _pct(m[metrics.REFERENCE_STYLE_KEY]),
            None if not comp else comp["metrics"].get(metrics.REFERENCE_STYLE_KEY),
        ),
    ]
    head_rows = "".join(
        f"<tr><td>{e(n)}</td><td><b>{v}</b></td>"
        + (f"<td>{'' if d is None else f'{100 * d:+.2f} points'}</td>" if comp else "")
        + "</tr>"
        for n, v, d in headline
    )
    d = result["data"]
    blessing = ""
    if b:
        cls = "blessed" if b["blessed"] else "notblessed"
        checks = "".join(f"<li>{'pass' if c['passed'] else '<b>FAIL</b>'}: {e(c['detail'])}</li>" for c in b["checks"])
        blessing = f"<div class={cls}><h2>{'BLESSED' if b['blessed'] else 'NOT BLESSED'}</h2><ul>{checks}</ul></div>"
    skipped = ""
    if d.get("images_skipped"):
        items = "".join(f"<li>{e(s['reason'])}: {e(s['record'])}: {e(s['detail'])}</li>" for s in d["skipped"])
        skipped = f"<h3>Skipped records ({d['images_skipped']})</h3><p>{_skipped_summary(d, e)}</p><ul>{items}</ul>"

    def img(key, alt):
        return f'<p><img src="{files[key]}" alt="{e(alt)}"></p>' if files.get(key) else ""

    def gallery_list(key):
        return ", ".join(f"{e(i['filename'])} ({_pct(i['miou'])})" for i in result[f"{key}_images"])

    described = [
        f"{k.replace('_', ' ')} <code>{e(str(v))}</code>"
        for k, v in d.items()
        if k
        not in (
            "skipped",
            "skipped_by_reason",
            "images_evaluated",
            "images_skipped",
            "sampled_max_images",
            "images_total",
            "skipped_fraction",
            "max_eval_skipped_fraction",
        )
        and v is not None
    ]
    data_line = ", ".join(
        described
        + [
            f"{d['images_evaluated']} images evaluated",
            (_skipped_summary(d, e) if "skipped_fraction" in d else f"{d['images_skipped']} skipped")
            + (f" {e(json.dumps(d['skipped_by_reason']))}" if d["images_skipped"] else ""),
        ]
    )
    if d.get("sampled_max_images"):
        data_line += f", <b>a random sample of at most {d['sampled_max_images']} images</b> (not the full split)"
    baseline_line = (
        f"<p>Baseline: <code>{e(result['baseline_model']['path'])}</code>, mIoU {_pct(base['metrics']['miou'])}</p>"
        if base
        else f"<p>Baseline: <code>{e(result['baseline_model']['path'])}</code>, not evaluated: "
        f"{e(result['baseline_model']['reason'])}</p>"
        if (result.get("baseline_model") or {}).get("reason")
        else "<p>No baseline model.</p>"
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>DeepLab evaluation: mIoU {_pct(m["miou"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
td:nth-child(2) {{ text-align: left; }} tr.absent {{ color: #999; }}
.blessed {{ border-left: 6px solid #2a2; padding-left: 1em; }} .notblessed {{ border-left: 6px solid #d22; padding-left: 1em; }}
img {{ max-width: 100%; }} code {{ font-size: 90%; }}
</style></head><body>
<h1>DeepLab V3 evaluation</h1>
<p>Model: <code>{e(result["model"]["path"])}</code></p>
{baseline_line}
<p>Data: {data_line}</p>
<p>Test-time augmentation: {e(result["tta_description"] or "none")}.
{d["images_evaluated"]} images, {result["num_pixels"]:,} labelled pixels, {result["num_classes_present"]} classes present
{"(absent, left out of the means: " + e(", ".join(result["absent_classes"])) + ")" if result["absent_classes"] else ""}.
{"" if not result.get("seconds_per_image") else f"{result['seconds_per_image']:.2f} s/image."}
{"" if not result["invalid_predictions"] else f"<b>{result['invalid_predictions']:,} pixels had predictions outside the class range</b> (counted as errors)."}</p>
{blessing}
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th>{"<th>vs baseline</th>" if comp else ""}</tr>{head_rows}</table>
{skipped}
<h2>Per class</h2>
{img("per_class", "per-class IoU")}
<table><tr><th>id</th><th>class</th><th>IoU</th><th>accuracy</th><th>GT pixels</th><th>predicted pixels</th>{"<th>IoU change (points)</th>" if comp else ""}</tr>
{"".join(rows)}</table>
<h2>Confusion matrix</h2>
{img("confusion", "confusion matrix")}
<h2>Best images</h2><p>{gallery_list("best")}</p>
{img("gallery_best", "best images")}
<h2>Worst images</h2><p>{gallery_list("worst")}</p>
{img("gallery_worst", "worst images")}
<h2>Files</h2>
<ul><li><a href="{EVALUATION_JSON}">{EVALUATION_JSON}</a> (everything above, machine-readable)</li>
<li><a href="{PER_IMAGE_CSV}">{PER_IMAGE_CSV}</a></li>
<li><code>{TENSORBOARD_DIR}/</code>: <code>tensorboard --logdir {TENSORBOARD_DIR}</code></li></ul>
</body></html>
"""


def write_tensorboard(result, logdir, pngs=()):
    """The headline scalars, per-class IoU and the chart PNGs as TensorBoard summaries (step 0)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for key, value in result["metrics"].items():
            if isinstance(value, float):
                tf.summary.scalar(f"eval/{key}", value, step=0)
        for c in result["per_class"]:
            if c["iou"] is not None:
                tf.summary.scalar(f"iou/{c['id']:02d}_{c['name']}", c["iou"], step=0)
        if result.get("baseline"):
            tf.summary.scalar("eval/baseline_miou", result["baseline"]["metrics"]["miou"] or 0.0, step=0)
        if result.get("blessing"):
            tf.summary.scalar("eval/blessed", float(result["blessing"]["blessed"]), step=0)
        for name, png in pngs:
            tf.summary.image(f"charts/{name}", tf.io.decode_png(png)[tf.newaxis], step=0)
    writer.flush()
    writer.close()


def write_report(result, output_dir, gallery=None, tensorboard=True, palette=None):
    """Writes all report files into `output_dir` (local or remote) and returns their paths by key.

    palette: overlay colours of the gallery (uint8 [256, 3], a label map's `colors()`; default VOC); the key's
    names are result['class_names'], the ignore id result.get('ignore_label', 255)."""
    gfile = _gfile()
    output_dir = str(output_dir).rstrip("/")
    gfile.makedirs(output_dir)
    files = {}
    confusion = confusion_png(result)
    _write_bytes(os.path.join(output_dir, CONFUSION_PNG), confusion)
    files["confusion"] = CONFUSION_PNG
    per_class = per_class_png(result)
    _write_bytes(os.path.join(output_dir, PER_CLASS_PNG), per_class)
    files["per_class"] = PER_CLASS_PNG
    mious = {row["filename"]: row["miou"] for row in result["per_image"]}
    for which in ("best", "worst"):
        if (
            gallery
            and gallery.get(which)
            and gallery_png(
                gallery[which],
                os.path.join(output_dir, GALLERY_PNG[which]),
                mious,
                class_names=result.get("class_names"),
                palette=palette,
                ignore_label=result.get("ignore_label"),
            )
        ):
            files[f"gallery_{which}"] = GALLERY_PNG[which]
    _write_bytes(os.path.join(output_dir, PER_IMAGE_CSV), per_image_csv(result).encode("utf-8"))
    files["per_image"] = PER_IMAGE_CSV
    if tensorboard:
        write_tensorboard(
            result,
            os.path.join(output_dir, TENSORBOARD_DIR),
            pngs=[("confusion_matrix", confusion), ("per_class_iou", per_class)],
        )
        files["tensorboard"] = TENSORBOARD_DIR
    files["index"] = INDEX_HTML
    files["evaluation"] = EVALUATION_JSON
    result["report_files"] = dict(files)
    _write_bytes(os.path.join(output_dir, EVALUATION_JSON), json.dumps(result, indent=1).encode("utf-8"))
    _write_bytes(os.path.join(output_dir, INDEX_HTML), index_html(result, files).encode("utf-8"))
    return {k: os.path.join(output_dir, v) for k, v in files.items()}
