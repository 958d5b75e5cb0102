"""ImageNet initialisation of the backbones from the LOCAL h5 files tf_keras.applications downloads.

No download happens here (training machines may have no network): put the file in
$DEEPLAB_WEIGHTS_DIR or ~/.keras/models (where Keras caches it), or pass its path. The backbones
use tf_keras.applications layer names (models/backbone.py), so weights map layer by layer by name;
the shapes are checked, and every backbone layer with weights must be found in the file.
"""

import os

import h5py
import numpy as np

_RESNET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_MOBILENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def expected_weights_file(backbone, alpha=1.0):
    """(file name, download URL) of the Keras ImageNet no-top weights for a backbone."""
    if backbone == "resnet_v2_50":
        name = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return name, _RESNET_URL + name
    if backbone == "resnet_v2_101":
        name = "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return name, _RESNET_URL + name
    if backbone == "mobilenet_v2":
        if float(alpha) not in _MOBILENET_ALPHAS:
            raise ValueError(
                f"no ImageNet weights exist for mobilenet_v2 alpha={alpha}; "
                f"Keras publishes alpha in {_MOBILENET_ALPHAS}"
            )
        name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"
        return name, _MOBILENET_URL + name
    raise ValueError(f"unknown backbone {backbone!r}")


def find_weights_file(backbone, alpha=1.0, path=None):
    """The local weights file: `path` if given, else the expected name in $DEEPLAB_WEIGHTS_DIR or ~/.keras/models."""
    name, url = expected_weights_file(backbone, alpha)
    candidates = (
        [path]
        if path
        else [
            os.path.join(d, name)
            for d in (os.environ.get("DEEPLAB_WEIGHTS_DIR"), os.path.expanduser("~/.keras/models"))
            if d
        ]
    )
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"ImageNet weights for {backbone} not found (looked at: {', '.join(candidates)}). "
        f"Download {name} from {url} (on a machine with network: "
        f"`curl -LO {url}`) and put it in $DEEPLAB_WEIGHTS_DIR or ~/.keras/models, or pass its path."
    )


def _read_h5_weights(path):
    """{layer name: [arrays in Keras weight order]} of a Keras h5 weights file."""
    weights = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for layer_name in group.attrs["layer_names"]:
            layer_name = layer_name.decode() if isinstance(layer_name, bytes) else layer_name
            layer_group = group[layer_name]
            names = [n.decode() if isinstance(n, bytes) else n for n in layer_group.attrs["weight_names"]]
            if names:
                weights[layer_name] = [np.asarray(layer_group[n]) for n in names]
    return weights


def load_imagenet_weights(backbone_model, backbone, alpha=1.0, path=None):
    """Copy ImageNet weights into `backbone_model` (from models.backbone) by layer name.

    Returns {"file", "loaded": layers set, "unused": names in the file the backbone does not have
    (MobileNetV2's 1280-channel Conv_1 head, dropped by DeepLab)}. Raises ValueError naming the
    layer on a missing layer or a shape mismatch.
    """
    path = find_weights_file(backbone, alpha, path)
    stored = _read_h5_weights(path)
    loaded = 0
    for layer in backbone_model.layers:
        if not layer.weights:
            continue
        if layer.name not in stored:
            raise ValueError(
                f"{path}: no weights for layer {layer.name!r}; is it the file of {backbone} "
                f"(alpha={alpha})? expected {expected_weights_file(backbone, alpha)[0]}"
            )
        arrays = stored[layer.name]
        shapes = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(
                f"{path}: layer {layer.name!r} has shapes {[a.shape for a in arrays]} in the file, "
                f"the backbone needs {shapes} (wrong backbone or alpha?)"
            )
        layer.set_weights(arrays)
        loaded += 1
    unused = sorted(set(stored) - {layer.name for layer in backbone_model.layers})
    return {"file": path, "loaded": loaded, "unused": unused}
