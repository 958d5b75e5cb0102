"""Training speed of our DeepLab V3 (tf_keras) against torchvision's, measured one after the other in one run.

  .venv/bin/python bench/compare_torchvision.py [--configs r50_os16 r50_os8 mnv2_os16] [--steps 5]
        [--warmup 2] [--crop 321] [--batch 4] [--threads N] [--xla] [--no-peer] [--no-fit]
        [--torch-venv .venv-torch | --peer-python /path/to/python] [--output result.json] [--quick]

Prints one JSON document (also written to --output) with, per configuration, for "ours" and "theirs":
  images_per_s            batch / median seconds of a full training step (forward + loss + backward +
                          SGD momentum 0.9 update); images_per_s_best: batch / fastest timed step
  forward_s               median seconds of a forward pass in training mode (BN batch statistics,
                          no gradient recording)
  forward_backward_s      median seconds of forward + loss + gradients (no update)
  backward_s, backward_over_forward   (forward_backward_s - forward_s) and its ratio to forward_s
  gflop_per_step, achieved_gflop_per_s, fraction_of_matmul_peak
and "ours_over_theirs" (images/s ours / theirs: > 1 means ours is faster). Ours also has
  "fit": our real Keras step, models.train.compile_model(preset "paper", weights None, the crop and batch of
         the run) + Model.fit on an in-memory tf.data dataset (poly-decay SGD, masked loss, weight decay,
         streaming mIoU metric): what users run; timed as the interval between consecutive batch ends;
         float32 unless --fit-precision auto (what `precision: auto` picks here, e.g. mixed_bfloat16 on a
         CPU with avx512_bf16);
  "xla" (--xla): the custom step under tf.function(jit_compile=True): compile_s (first call minus a
         steady step) and images_per_s_amortised = batch * N / (compile_s + N * step_s) over the N = --steps
         timed steps.

Configurations (float32, 21 classes, batch --batch, crop --crop, all cores unless --threads):
  r50_os16   ours: resnet_v2_50, output_stride 16, multi_grid (1,2,4), ASPP (6,12,18) + image pooling.
             theirs: torchvision DeepLabV3(IntermediateLayerGetter(resnet50(replace_stride_with_dilation=
             [False, False, True]), {"layer4": "out"}), DeepLabHead(2048, 21, atrous_rates=(6, 12, 18))),
             no aux classifier, weights None: the same architecture at output stride 16.
  r50_os8    ours: output_stride 8, ASPP (12,24,36). theirs: replace_stride_with_dilation=[False, True, True],
             rates (12,24,36) (= torchvision's stock deeplabv3_resnet50 without the aux classifier).
  mnv2_os16  ours: mobilenet_v2 alpha 1.0, output_stride 16, ASPP (6,12,18) + image pooling.
             theirs: torchvision has no MobileNetV2 DeepLab; built here from torchvision.models.mobilenet_v2
             features without the final 1280-channel conv (as ours), its last stride-2 block (features[14])
             set to stride 1 and the depthwise convs after it dilated by 2 (exactly our atrous rewrite),
             + DeepLabHead(320, 21, (6, 12, 18)).
The architectures are not identical to the FLOP: ours is the pre-activation ResNet-v2 (Keras layout: the
stride in the LAST unit of each stack) with multi-grid, torchvision's is ResNet-v1.5 (stride in the
first unit's 3x3) with one dilation per stage; hence each side's FLOPs are counted on its own model.

Method:
  * Each measurement runs in its own subprocess, one after the other: the matmul peak (TF), then per
    configuration ours (.venv python, TF) and theirs (the torch venv). Each subprocess records its thread
    settings (TF intra/inter-op, torch.get_num_threads()) and the load average before/after (the machine may
    be shared: compare the load averages before trusting a ratio).
  * Our steps are tf.functions (GradientTape, models.losses.masked_softmax_cross_entropy,
    tf_keras.optimizers.SGD(momentum=0.9)); theirs: model.train(), F.cross_entropy(ignore_index=255),
    torch.optim.SGD(momentum=0.9), NCHW inputs of the same shapes. Labels are random classes with ~5 % 255.
    `--warmup` calls (default 2) are excluded, then `--steps` timed calls (default 5); medians are reported.
  * FLOPs are counted analytically on each side's own model, not from the implementation: every
    convolution and dense layer of a batch-1 forward at the crop, 2 * output elements * kh * kw * cin/groups
    (ours: the Conv2D/DepthwiseConv2D/Dense layers of the Keras model, output shapes recorded by one eager
    call; theirs: forward hooks on nn.Conv2d/nn.Linear). Element-wise ops (BN, ReLU, add, resize, loss) are
    left out. A training step is counted as 3x the forward (backward = grad wrt inputs + grad wrt weights).
    gflop_per_step = 3 * forward GFLOP per image * batch.
  * Matmul peak: the best of 10 float32 2048x2048 @ 2048x2048 tf.matmul (2 * 2048^3 FLOP each) in its own
    TF subprocess with the same thread settings, measured again (best of 5) at the end of every "ours"
    subprocess; the reference (matmul_peak.peak_gflop_per_s_used) is the best of them all, since a shared
    CPU gives a low figure whenever it is busy. fraction_of_matmul_peak = achieved_gflop_per_s / that.
    Theirs also records torch.matmul's figure (torch_matmul_gflop_per_s) for reference.
  * The peer's venv (--torch-venv, default .venv-torch/ in the repo root) is created when missing:
    `python -m venv` + `pip install torch==2.13.0` + `pip install --no-deps torchvision==0.28.0` + numpy and
    pillow (torchvision's own deps; --no-deps keeps pip from replacing the CPU torch). torchvision's
    compiled ops are CUDA builds that do not load on this torch, so the peer process replaces
    torch.library.register_fake by a no-op before importing torchvision (the model code is pure Python).
  * --quick: a smoke run for tests (crop 129, batch 2, 1 warm-up, 1 timed step, no fit, no XLA, and only
    mnv2_os16 unless --configs is given; with --no-peer it needs no torch venv). About 5 minutes on a
    busy 2-core machine, mostly TF start-up and tracing.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("r50_os16", "r50_os8", "mnv2_os16")
TORCH_VERSION = "2.13.0"
TORCHVISION_VERSION = "0.28.0"
NUM_CLASSES = 21
IGNORE_LABEL = 255
MATMUL_N = 2048


# ----------------------------------------------------------------------------------------------- common


def _summary(times):
    ordered = sorted(times)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
    return {
        "median_s": median,
        "mean_s": sum(times) / len(times),
        "min_s": ordered[0],
        "times_s": [round(t, 4) for t in times],
    }


def _time_calls(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _summary(times)


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _derived(result, spec, peak_gflops):
    """images/s, backward/forward and FLOP rates from the raw medians of one side."""
    batch = spec["batch"]
    fwd = result["forward"]["median_s"]
    fwd_bwd = result["forward_backward"]["median_s"]
    step = result["train_step"]["median_s"]
    result["images_per_s"] = batch / step
    result["images_per_s_best"] = batch / result["train_step"]["min_s"]  # least disturbed step on a shared CPU
    result["forward_s"] = fwd
    result["forward_backward_s"] = fwd_bwd
    result["train_step_s"] = step
    result["backward_s"] = fwd_bwd - fwd
    result["backward_over_forward"] = (fwd_bwd - fwd) / fwd
    gflop_fwd = result["forward_gflop_per_image"]
    result["gflop_per_step"] = 3.0 * gflop_fwd * batch
    result["achieved_gflop_per_s"] = result["gflop_per_step"] / step
    if peak_gflops:
        result["fraction_of_matmul_peak"] = result["achieved_gflop_per_s"] / peak_gflops
    fit = result.get("fit")
    if fit and "median_s" in fit:
        fit["images_per_s"] = batch / fit["median_s"]
        fit["images_per_s_best"] = batch / fit["min_s"]
        fit["achieved_gflop_per_s"] = result["gflop_per_step"] / fit["median_s"]
        if peak_gflops:
            fit["fraction_of_matmul_peak"] = fit["achieved_gflop_per_s"] / peak_gflops
    xla = result.get("xla")
    if xla and "median_s" in xla:
        n = spec["steps"]
        xla["images_per_s"] = batch / xla["median_s"]
        xla["compile_s"] = max(xla["first_call_s"] - xla["median_s"], 0.0)
        xla["amortised_over_steps"] = n
        xla["images_per_s_amortised"] = batch * n / (xla["compile_s"] + n * xla["median_s"])
        xla["achieved_gflop_per_s"] = result["gflop_per_step"] / xla["median_s"]
        if peak_gflops:
            xla["fraction_of_matmul_peak"] = xla["achieved_gflop_per_s"] / peak_gflops
    return result


# ------------------------------------------------------------------------------------------ TF workers


def _import_tf(spec):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if spec.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _tf_threads(tf):
    return {
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TF's default (all cores)",
    }


def _tf_matmul_peak(tf, repeats=10):
    n = MATMUL_N
    a = tf.random.normal([n, n], dtype=tf.float32, seed=1)
    b = tf.random.normal([n, n], dtype=tf.float32, seed=2)
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    matmul(a, b).numpy()
    best = min(_timed(lambda: matmul(a, b).numpy()) for _ in range(repeats))
    return {
        "what": f"float32 tf.matmul {n}x{n} @ {n}x{n}, best of {repeats}",
        "best_s": best,
        "gflop_per_s": 2.0 * n**3 / best / 1e9,
    }


def worker_peak(spec):
    tf = _import_tf(spec)
    return {**_tf_matmul_peak(tf), "tf_version": tf.__version__, **_tf_threads(tf)}


def _keras_forward_gflop(model, crop):
    """Analytic conv/dense FLOPs of one image: 2 * output elements * kh * kw * cin/groups per layer."""
    import tensorflow as tf
    import tf_keras as keras

    records = []
    patched = []
    for layer in model.submodules:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            original = layer.call

            def wrapped(inputs, *args, _layer=layer, _original=original, **kwargs):
                outputs = _original(inputs, *args, **kwargs)
                records.append((_layer, tuple(outputs.shape)))
                return outputs

            layer.call = wrapped
            patched.append(layer)
    try:
        model(tf.zeros([1, crop, crop, 3]), training=False)
    finally:
        for layer in patched:
            del layer.call  # back to the class method
    total = 0
    for layer, shape in records:
        out_elems = 1
        for d in shape:
            out_elems *= int(d)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out_elems * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group = layer.kernel.shape[:3]
            total += 2 * out_elems * kh * kw * cin_per_group
        else:  # Dense
            total += 2 * out_elems * layer.kernel.shape[0]
    return total / 1e9, len(records)


def _our_model_kwargs(config):
    if config == "r50_os16":
        return dict(backbone="resnet_v2_50", output_stride=16)
    if config == "r50_os8":
        return dict(backbone="resnet_v2_50", output_stride=8)
    if config == "mnv2_os16":
        return dict(backbone="mobilenet_v2", output_stride=16, alpha=1.0)
    raise ValueError(config)


def worker_ours(spec):
    sys.path.insert(0, REPO)
    tf = _import_tf(spec)
    import numpy as np
    import tf_keras as keras

    from models.config import ModelConfig
    from models.deeplab import build_deeplab_v3
    from models.losses import masked_softmax_cross_entropy

    config, batch, crop = spec["config"], spec["batch"], spec["crop"]
    warmup, steps = spec["warmup"], spec["steps"]
    kwargs = _our_model_kwargs(config)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, crop, crop, 3)).astype(np.float32))
    labels_np = rng.integers(0, NUM_CLASSES, (batch, crop, crop)).astype(np.int32)
    labels_np[rng.random(labels_np.shape) < 0.05] = IGNORE_LABEL
    labels = tf.constant(labels_np)

    keras.utils.set_random_seed(0)
    model = build_deeplab_v3(ModelConfig(num_classes=NUM_CLASSES, **kwargs), weights=None)
    result = {
        "model": dict(
            kwargs,
            num_classes=NUM_CLASSES,
            multi_grid=[1, 2, 4],
            weight_decay=0.0,
            aspp="paper rates for the output stride + image pooling",
            compute_dtype=model.get_layer("logits").compute_dtype,
        ),
        "params": int(model.count_params()),
        "tf_version": tf.__version__,
        **_tf_threads(tf),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }
    result["forward_gflop_per_image"], result["counted_layers"] = _keras_forward_gflop(model, crop)
    optimizer = keras.optimizers.SGD(learning_rate=0.001, momentum=0.9)
    variables = model.trainable_variables

    def forward(x):
        return tf.reduce_sum(model(x, training=True))

    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = masked_softmax_cross_entropy(y, model(x, training=True))
        return loss, tape.gradient(loss, variables)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = masked_softmax_cross_entropy(y, model(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    fwd_fn, fb_fn, step_fn = tf.function(forward), tf.function(forward_backward), tf.function(train_step)
    phases = [
        ("forward", lambda: fwd_fn(images).numpy()),
        ("forward_backward", lambda: fb_fn(images, labels)[0].numpy()),
        ("train_step", lambda: step_fn(images, labels).numpy()),
    ]
    for name, fn in phases:
        _log(f"ours {config}: {name}")
        result[name] = _time_calls(fn, warmup, steps)

    if spec.get("xla"):
        _log(f"ours {config}: xla train step")
        xla_step = tf.function(train_step, jit_compile=True)
        start = time.perf_counter()
        xla_step(images, labels).numpy()
        first = time.perf_counter() - start
        xla = _time_calls(lambda: xla_step(images, labels).numpy(), max(warmup - 1, 0), steps)
        xla["first_call_s"] = first
        result["xla"] = xla

    if spec.get("fit"):
        _log(f"ours {config}: Model.fit (compile_model, preset paper)")
        result["fit"] = _fit_step(tf, keras, spec, kwargs, images, labels_np)
    result["tf_matmul_gflop_per_s"] = _tf_matmul_peak(tf, repeats=5)["gflop_per_s"]  # the peak again, now
    return result


def _fit_step(tf, keras, spec, kwargs, images, labels_np):
    from models import hparams as hparams_lib
    from models.model_io import build_model
    from models.train import compile_model

    batch, warmup, steps = spec["batch"], spec["warmup"], spec["steps"]
    overrides = {k: v for k, v in kwargs.items() if k in ("backbone", "output_stride", "alpha")}
    requested = spec.get("fit_precision", "float32")
    hp = hparams_lib.preset(
        "paper", weights=None, crop_size=spec["crop"], batch_size=batch, precision=requested, **overrides
    )
    policy, reason = requested, "requested"
    if requested == "auto":
        from models.precision import resolve_precision

        policy, reason = resolve_precision(requested)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = compile_model(build_model(hp.model, None, **hp.build_options()), hp, total_steps=hp.train_steps)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    labels = tf.constant(labels_np[..., None].astype("uint8"))
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(2)
    ends = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=max(warmup, 1) + steps, verbose=0, callbacks=[Timer()])
    intervals = [b - a for a, b in zip([start] + ends[:-1], ends)]
    fit = _summary(intervals[-steps:])
    fit.update(
        first_step_s=intervals[0],
        jit_compile=bool(hp.xla),
        precision=model.dtype_policy.name,
        precision_reason=reason,
        compute_dtype=model.get_layer("logits").compute_dtype,
        what="models.train.compile_model(preset 'paper', weights=None) + Model.fit on in-memory "
        "tf.data; interval between consecutive batch ends; includes weight decay and mIoU metric",
        weight_decay=hp.weight_decay,
    )
    return fit


# ---------------------------------------------------------------------------------------- torch worker


def _import_torchvision():
    import torch
    import torch.library

    def _no_fake(*args, **kwargs):  # torchvision's compiled (CUDA) ops do not load; their fakes are not needed
        return lambda fn: fn

    torch.library.register_fake = _no_fake
    import torchvision

    return torch, torchvision


def _torch_model(torch, torchvision, config):
    from torchvision.models import mobilenet_v2, resnet50
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    if config in ("r50_os16", "r50_os8"):
        dilation = [False, False, True] if config == "r50_os16" else [False, True, True]
        rates = (6, 12, 18) if config == "r50_os16" else (12, 24, 36)
        backbone = IntermediateLayerGetter(
            resnet50(weights=None, replace_stride_with_dilation=dilation), return_layers={"layer4": "out"}
        )
        model = DeepLabV3(backbone, DeepLabHead(2048, NUM_CLASSES, atrous_rates=rates), None)
        desc = (
            f"DeepLabV3(IntermediateLayerGetter(resnet50(weights=None, replace_stride_with_dilation="
            f"{dilation}), layer4), DeepLabHead(2048, {NUM_CLASSES}, atrous_rates={rates}), aux=None)"
        )
        return model, desc
    if config == "mnv2_os16":
        features = mobilenet_v2(weights=None).features[:-1]  # drop the 1280-channel 1x1 conv, as ours
        # features[14] is the last stride-2 block (160 channels): stride 1, later depthwise convs dilated by 2.
        for index in range(14, len(features)):
            for module in features[index].modules():
                if isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.kernel_size == (3, 3):
                    if index == 14:
                        module.stride = (1, 1)
                    else:
                        module.dilation, module.padding = (2, 2), (2, 2)
        backbone = IntermediateLayerGetter(
            torch.nn.Sequential(collections.OrderedDict(features=features)), return_layers={"features": "out"}
        )
        model = DeepLabV3(backbone, DeepLabHead(320, NUM_CLASSES, atrous_rates=(6, 12, 18)), None)
        desc = (
            "DeepLabV3(mobilenet_v2(weights=None).features[:-1] with features[14] stride 1 and later "
            "depthwise dilation 2 (output stride 16), DeepLabHead(320, 21, (6, 12, 18)), aux=None)"
        )
        return model, desc
    raise ValueError(config)


def _torch_forward_gflop(torch, model, crop):
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += 2 * output.numel() * kh * kw * module.in_channels // module.groups
        else:
            total[0] += 2 * output.numel() * module.in_features

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, crop, crop))
    for handle in handles:
        handle.remove()
    model.train()
    return total[0] / 1e9, len(handles)


def worker_theirs(spec):
    torch, torchvision = _import_torchvision()
    import torch.nn.functional as F

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    config, batch, crop = spec["config"], spec["batch"], spec["crop"]
    warmup, steps = spec["warmup"], spec["steps"]
    torch.manual_seed(0)
    model, desc = _torch_model(torch, torchvision, config)
    result = {
        "model": desc,
        "params": int(sum(p.numel() for p in model.parameters())),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    result["forward_gflop_per_image"], result["counted_layers"] = _torch_forward_gflop(torch, model, crop)
    images = torch.rand(batch, 3, crop, crop) * 255.0
    labels = torch.randint(0, NUM_CLASSES, (batch, crop, crop))
    labels[torch.rand(labels.shape) < 0.05] = IGNORE_LABEL
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    model.train()

    def forward():
        with torch.no_grad():
            return model(images)["out"].sum().item()

    def forward_backward():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images)["out"], labels, ignore_index=IGNORE_LABEL)
        loss.backward()
        return loss.item()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images)["out"], labels, ignore_index=IGNORE_LABEL)
        loss.backward()
        optimizer.step()
        return loss.item()

    for name, fn in (("forward", forward), ("forward_backward", forward_backward), ("train_step", train_step)):
        _log(f"theirs {config}: {name}")
        result[name] = _time_calls(fn, warmup, steps)

    n = MATMUL_N
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(5))
    result["torch_matmul_gflop_per_s"] = 2.0 * n**3 / best / 1e9
    return result


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _log(message):
    print(f"[compare_torchvision {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


WORKERS = {"peak": worker_peak, "ours": worker_ours, "theirs": worker_theirs}


# ----------------------------------------------------------------------------------------- orchestration


def _check_peer(python):
    code = (
        "import importlib.metadata as m, json\nout = {}\n"
        "for name in ('torch', 'torchvision', 'numpy', 'pillow'):\n"
        "    try:\n        out[name] = m.version(name)\n    except m.PackageNotFoundError:\n"
        "        out[name] = None\nprint(json.dumps(out))"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


def ensure_torch_venv(path):
    """The peer's python in `path`, creating the venv and installing what is missing (idempotent)."""
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        _log(f"creating {path}")
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
    versions = _check_peer(python)
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    if not (versions.get("torch") or "").startswith(TORCH_VERSION):
        _log(f"pip install torch=={TORCH_VERSION} into {path}")
        subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True, stdout=sys.stderr)
    if not (versions.get("torchvision") or "").startswith(TORCHVISION_VERSION):
        _log(f"pip install --no-deps torchvision=={TORCHVISION_VERSION} into {path}")
        subprocess.run(pip + ["--no-deps", f"torchvision=={TORCHVISION_VERSION}"], check=True, stdout=sys.stderr)
    missing = [name for name in ("numpy", "pillow") if not versions.get(name)]
    if missing:
        _log(f"pip install {' '.join(missing)} into {path}")
        subprocess.run(pip + missing, check=True, stdout=sys.stderr)
    return python


def run_worker(python, kind, spec, timeout):
    with tempfile.TemporaryDirectory(prefix="compare_torchvision_") as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(
            os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
        )
        before = _loadavg()
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [python, os.path.abspath(__file__), "--_worker", kind, "--_spec", json.dumps(spec), "--_out", out],
                cwd=REPO,
                env=env,
                stdout=sys.stderr,
                timeout=timeout,
            )
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        wall = time.perf_counter() - start
        if code != 0 or not os.path.exists(out):
            return {"error": f"{kind} worker failed (exit {code}); see stderr", "wall_s": wall}
        with open(out) as f:
            result = json.load(f)
        result.update(wall_s=round(wall, 1), loadavg_before=before, loadavg_after=_loadavg(), python=python)
        return result


def _cpu_info():
    info = {"cores": os.cpu_count(), "machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name") and "model_name" not in info:
                info["model_name"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = {
                    flag: flag in flags
                    for flag in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
                }
                break
    except OSError:
        pass
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIGS, default=None, help="default: all (--quick: mnv2_os16 only)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per phase (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of both sides (0 = all cores)")
    parser.add_argument("--xla", action="store_true", help="also time our step with jit_compile=True")
    parser.add_argument("--no-fit", action="store_true", help="skip our Model.fit measurement")
    parser.add_argument(
        "--fit-precision",
        default="float32",
        choices=("float32", "auto", "mixed_bfloat16"),
        help="dtype policy of our Model.fit measurement (auto: models.precision decides)",
    )
    parser.add_argument("--no-peer", action="store_true", help="ours only (no torch venv needed)")
    parser.add_argument("--torch-venv", default=os.path.join(REPO, ".venv-torch"))
    parser.add_argument("--peer-python", help="an existing python with torch and torchvision (skips the venv)")
    parser.add_argument("--ours-python", default=None, help="default: .venv/bin/python, else this python")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per worker subprocess")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="smoke run: crop 129, batch 2, 1+1 steps, no fit")
    parser.add_argument("--_worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--_spec", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        result = WORKERS[args._worker](json.loads(args._spec))
        with open(args._out, "w") as f:
            json.dump(result, f)
        return 0

    if args.quick:
        args.crop, args.batch, args.steps, args.warmup, args.no_fit, args.xla = 129, 2, 1, 1, True, False
        args.configs = args.configs or ["mnv2_os16"]
    args.configs = args.configs or list(CONFIGS)
    ours_python = args.ours_python or next(
        (p for p in (os.path.join(REPO, ".venv", "bin", "python"),) if os.path.exists(p)), sys.executable
    )
    peer_python = None
    if not args.no_peer:
        peer_python = args.peer_python or ensure_torch_venv(args.torch_venv)

    base = {"batch": args.batch, "crop": args.crop, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    report = {
        "benchmark": "DeepLab V3 training step, ours (tf_keras) vs torchvision, float32, one run, one after the other",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_info(),
        "env": {
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        },
        "settings": dict(
            base,
            num_classes=NUM_CLASSES,
            dtype="float32",
            xla=args.xla,
            fit=not args.no_fit,
            fit_precision=args.fit_precision,
            timing="median of --steps timed calls after --warmup calls; images/s = batch / median train step",
            flops="analytic conv+dense, training = 3 x forward",
        ),
        "ours_python": ours_python,
        "peer_python": peer_python,
    }
    _log("matmul peak (TF)")
    peak = run_worker(ours_python, "peak", base, args.timeout)
    report["matmul_peak"] = peak
    report["configs"] = {}
    for config in args.configs:
        spec = dict(base, config=config, xla=args.xla, fit=not args.no_fit, fit_precision=args.fit_precision)
        entry = {}
        _log(f"{config}: ours")
        ours = run_worker(ours_python, "ours", spec, args.timeout)
        entry["ours"] = ours
        if peer_python:
            _log(f"{config}: theirs")
            theirs = run_worker(peer_python, "theirs", spec, args.timeout)
            entry["theirs"] = theirs
        report["configs"][config] = entry
        _log(f"{config}: done")
    # The CPU may be shared: the peak reference is the best float32 matmul seen anywhere in this run.
    peaks = [peak.get("gflop_per_s")] + [e["ours"].get("tf_matmul_gflop_per_s") for e in report["configs"].values()]
    peak_gflops = max((p for p in peaks if p), default=None)
    report["matmul_peak"]["peak_gflop_per_s_used"] = peak_gflops
    report["matmul_peak"]["all_tf_measurements_gflop_per_s"] = [p for p in peaks if p]
    for config, entry in list(report["configs"].items()):
        spec = dict(base, config=config)
        ours, theirs = entry["ours"], entry.get("theirs")
        for result in (ours, theirs):
            if result and "error" not in result:
                _derived(result, spec, peak_gflops)
        if theirs:
            if "error" not in ours and "error" not in theirs:
                entry["ours_over_theirs"] = {
                    "images_per_s": ours["images_per_s"] / theirs["images_per_s"],
                    "forward_s": ours["forward_s"] / theirs["forward_s"],
                    "backward_s": ours["backward_s"] / theirs["backward_s"],
                    "achieved_gflop_per_s": ours["achieved_gflop_per_s"] / theirs["achieved_gflop_per_s"],
                    "note": "images_per_s > 1: ours faster; forward_s/backward_s < 1: ours faster",
                }
                if "fit" in ours and "images_per_s" in ours["fit"]:
                    entry["ours_over_theirs"]["fit_images_per_s"] = ours["fit"]["images_per_s"] / theirs["images_per_s"]
        if "error" not in ours:
            entry["targets"] = {"ours_backward_at_most_3x_forward": ours["backward_over_forward"] <= 3.0}
        report["configs"][config] = {"headline": _headline(entry), **entry}
    text = json.dumps(_rounded(report), indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def _headline(entry):
    """The figures the issue asks for, first: images/s ours vs theirs, backward/forward, fraction of peak."""
    out = {}
    for side in ("ours", "theirs"):
        result = entry.get(side)
        if not result or "error" in result:
            continue
        out[f"{side}_images_per_s"] = result["images_per_s"]
        out[f"{side}_images_per_s_best"] = result["images_per_s_best"]
        out[f"{side}_backward_over_forward"] = result["backward_over_forward"]
        if "fraction_of_matmul_peak" in result:
            out[f"{side}_fraction_of_matmul_peak"] = result["fraction_of_matmul_peak"]
        for extra in ("fit", "xla"):
            if "images_per_s" in result.get(extra, {}):
                out[f"{side}_{extra}_images_per_s"] = result[extra]["images_per_s"]
        if "images_per_s_amortised" in result.get("xla", {}):
            out[f"{side}_xla_images_per_s_amortised"] = result["xla"]["images_per_s_amortised"]
    if "ours_over_theirs" in entry:
        out["ours_over_theirs_images_per_s"] = entry["ours_over_theirs"]["images_per_s"]
    return out


def _rounded(value):
    """Floats to 4 decimals (seconds, images/s, ratios) for a readable report."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
