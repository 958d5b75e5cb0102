"""Send image files to a TF Serving endpoint and write what came back: `deeplab predict` and the demo's last step.

    code = predict_files("localhost:8500", ["cat.jpg"], "predictions")  # gRPC; rest=True for the REST API

For every image it writes `<stem>_labels.png` (palette PNG of the label map) and `<stem>_overlay.png`, prints
the class shares, and writes `predictions.json` (server, API, model, signature, the class names, per image shares
and files). Class names and colours are the served model's (its `label_map` signature; VOC for a model without one).
"""

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from pipeline import configs

if TYPE_CHECKING:  # the clients import gRPC / TensorFlow: only the one asked for is imported
    from serving.rest_client import ServingClient

SIGNATURES = ("serving_default", "predict_images")
DEFAULT_BATCH_SIZE = 4
PREDICTIONS_FILE = "predictions.json"


# make_client's options, named as `deeplab predict`'s flags; the gRPC-only ones are dropped for REST.
CLIENT_OPTIONS = ("rest", "model_name", "version", "version_label", "timeout", "max_message_mb", "root_cert")
GRPC_ONLY_OPTIONS = ("max_message_mb", "root_cert")


def make_client(
    server: str, rest: bool = False, model_name: str = configs.MODEL_NAME, **options: Any
) -> "ServingClient":
    """A GrpcClient (default) or RestClient for `server` ('host:port'). options: the client's keyword
    arguments (version, version_label, timeout; for gRPC also max_message_mb and root_cert)."""
    if rest:
        from serving.rest_client import RestClient

        return RestClient(server, model_name, **{k: v for k, v in options.items() if k not in GRPC_ONLY_OPTIONS})
    from serving.grpc_client import GrpcClient

    return GrpcClient(server, model_name, **options)


def _client_label_map(client):
    """The served model's LabelMap; VOC when the client cannot ask (a stand-in without label_map())."""
    from data.label_map import LabelMap

    ask = getattr(client, "label_map", None)
    return ask() if callable(ask) else LabelMap.voc()


def predict_files(
    server: str,
    image_paths: Sequence[str],
    out_dir: str,
    signature: str = SIGNATURES[0],
    batch_size: int = DEFAULT_BATCH_SIZE,
    **client_options: Any,
) -> int:
    """Segments `image_paths` on the endpoint and writes label maps, overlays and predictions.json to `out_dir`.

    signature: serving_default sends the encoded files (batch_size per request); predict_images the decoded
    float pixels, one image per request. client_options: make_client's (rest, model_name, timeout, ...).
    Returns an exit code: 0 done, 1 the server failed or answered a
    map of the wrong size, 2 an image cannot be read (the problem is printed on stderr)."""
    import numpy as np
    from PIL import Image

    from data.synthetic import encode_palette_png
    from data.visualize import overlay
    from serving.rest_client import ServingClientError

    client = make_client(server, **client_options)
    encoded, images = [], []
    for path in image_paths:
        try:
            with open(path, "rb") as f:
                encoded.append(f.read())
            images.append(np.asarray(Image.open(path).convert("RGB")))
        except (OSError, ValueError) as e:
            print(f"deeplab predict: cannot read image {path}: {e}", file=sys.stderr)
            return 2
    try:
        if signature == "serving_default":
            label_maps = [m for m, _ in client.segment(encoded, batch_size=batch_size)]
        else:
            label_maps = [client.predict_images(image) for image in images]
        classes = _client_label_map(client)
    except ServingClientError as e:
        print(f"deeplab predict: {e}", file=sys.stderr)
        return 1
    names, colors = classes.names, classes.colors()
    background = 0 if names and names[0] == "background" else None  # VOC's rule: the background stays untinted
    os.makedirs(out_dir, exist_ok=True)
    report = []
    for path, image, label_map in zip(image_paths, images, label_maps):
        stem = os.path.splitext(os.path.basename(path))[0]
        if label_map.shape != image.shape[:2]:
            print(
                f"deeplab predict: {path}: server returned a {label_map.shape[1]}x{label_map.shape[0]} (WxH) map for "
                f"a {image.shape[1]}x{image.shape[0]} image",
                file=sys.stderr,
            )
            return 1
        labels_png = os.path.join(out_dir, f"{stem}_labels.png")
        overlay_png = os.path.join(out_dir, f"{stem}_overlay.png")
        with open(labels_png, "wb") as f:
            f.write(encode_palette_png(label_map.astype(np.uint8), palette=colors))
        ids8 = np.clip(label_map, 0, 255).astype(np.uint8)
        Image.fromarray(
            overlay(image, ids8, palette=colors, ignore_label=classes.ignore_label, background=background)
        ).save(overlay_png)
        ids, counts = np.unique(label_map, return_counts=True)
        shares = {
            names[i] if 0 <= i < len(names) else str(i): round(float(c) / label_map.size, 4)
            for i, c in sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: -t[1])
        }
        print(
            f"{path} ({image.shape[1]}x{image.shape[0]} WxH): "
            + ", ".join(f"{name} {share:.1%}" for name, share in shares.items())
        )
        report.append(
            {
                "image": path,
                "height": image.shape[0],
                "width": image.shape[1],
                "class_share": shares,
                "labels_png": labels_png,
                "overlay_png": overlay_png,
            }
        )
    with open(os.path.join(out_dir, PREDICTIONS_FILE), "w") as f:
        json.dump(
            {
                "server": server,
                "api": "rest" if client_options.get("rest") else "grpc",
                "model": client_options.get("model_name", configs.MODEL_NAME),
                "signature": signature,
                "label_map": {
                    "name": classes.name,
                    "class_names": list(names),
                    "class_colors": colors[: len(names)].tolist(),
                    "ignore_label": int(classes.ignore_label),
                },
                "images": report,
            },
            f,
            indent=2,
        )
    print(f"Wrote label maps, overlays and predictions.json to {out_dir}")
    return 0
