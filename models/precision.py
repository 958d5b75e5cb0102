"""`precision: auto`: the one place that decides which Keras dtype policy training and export use.

resolve_precision("auto") picks
  mixed_bfloat16 where bfloat16 is native: a GPU of compute capability >= 8.0 (Ampere and later), or,
                 without a GPU, a CPU with the `avx512_bf16` or `amx_bf16` flag (Intel Cooper Lake,
                 Sapphire Rapids and later, AMD Zen 4 and later);
  mixed_float16  on older GPUs with tensor cores (compute capability 7.x);
  float32        otherwise: on a CPU without those flags bfloat16 is emulated (on a 2-core AMD Zen 2
                 mixed_bfloat16 trained ~3x slower than float32), on pre-Volta GPUs float16 gains nothing.
Explicit values ("float32", "mixed_bfloat16", "mixed_float16") pass through unchanged (reason "requested");
an explicit reduced precision that the hardware only emulates is allowed but logs a warning.

`deeplab export` speaks "float32" / "bfloat16" (models/export.py): resolve_export_precision maps the same
decision onto those two (no float16 export: a GPU without native bfloat16 exports float32).
"""

import logging

log = logging.getLogger(__name__)

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
REQUESTS = (AUTO,) + POLICIES
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
BF16_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere: bfloat16 tensor cores
FP16_MIN_COMPUTE_CAPABILITY = (7, 0)  # Volta: float16 tensor cores (Keras warns below this)
EXPORT_PRECISIONS = ("float32", "bfloat16")


def read_cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags (x86 `flags`, ARM `Features`) of the first processor in `path`, as a
    frozenset; None where the file does not exist or cannot be read (non-Linux, sandboxes)."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return frozenset()


def gpu_compute_capabilities():
    """[(device name, (major, minor) or None)] of the visible GPUs (TensorFlow's view)."""
    import tensorflow as tf

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:  # pragma: no cover - details are best effort (old drivers, pluggable devices)
            details = {}
        found.append((details.get("device_name", device.name), _capability(details.get("compute_capability"))))
    return found


def _capability(value):
    if value is None:
        return None
    if isinstance(value, str):  # "8.0"
        value = value.split(".")
    return tuple(int(v) for v in value)[:2]


def _normalise_gpus(gpus):
    """[(name, capability)] from fakes/real values: (major, minor) tuples, "8.0" strings,
    get_device_details()-style dicts or (name, capability) pairs."""
    result = []
    for i, gpu in enumerate(gpus):
        name = f"GPU:{i}"
        if isinstance(gpu, dict):
            name, capability = gpu.get("device_name", name), gpu.get("compute_capability")
        elif isinstance(gpu, (tuple, list)) and len(gpu) == 2 and isinstance(gpu[0], str) and not gpu[0].isdigit():
            name, capability = gpu
        else:
            capability = gpu
        result.append((name, _capability(capability)))
    return result


def _format_cc(capability):
    return "unknown" if capability is None else "%d.%d" % capability


def _hardware(cpu_flags, gpus):
    if cpu_flags is None:
        cpu_flags = read_cpu_flags()
    if gpus is None:
        gpus = gpu_compute_capabilities()
    return (None if cpu_flags is None else frozenset(cpu_flags)), _normalise_gpus(gpus)


def _native(cpu_flags, gpus):
    """(native bfloat16?, native float16?, short description of the deciding hardware)."""
    if gpus:
        capabilities = [cc for _, cc in gpus]
        # Every replica runs the same policy: the weakest GPU decides; unknown counts as old.
        weakest = None if None in capabilities else min(capabilities)
        name = gpus[capabilities.index(weakest)][0]
        name = name if name.upper().startswith("GPU") else f"GPU {name}"
        what = f"{name} has compute capability {_format_cc(weakest)}"
        if len(gpus) > 1:
            what = f"{len(gpus)} GPUs, the weakest {what}"
        return (
            weakest is not None and weakest >= BF16_MIN_COMPUTE_CAPABILITY,
            weakest is not None and weakest >= FP16_MIN_COMPUTE_CAPABILITY,
            what,
        )
    if cpu_flags is None:
        return False, False, "no GPU; CPU flags unknown (no /proc/cpuinfo)"
    native = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in cpu_flags]
    if native:
        return True, False, f"CPU has {native[-1]}"
    return False, False, "no GPU; CPU has neither " + " nor ".join(NATIVE_BF16_CPU_FLAGS)


def resolve_precision(requested=AUTO, *, cpu_flags=None, gpus=None):
    """(Keras dtype policy name, short human-readable reason) for `requested` on this machine.

    requested: "auto" or one of POLICIES. cpu_flags: iterable of CPU flags (default: parsed from
    /proc/cpuinfo; None there = unknown -> float32). gpus: iterable of GPUs as (major, minor) compute
    capabilities, "8.0" strings, {"compute_capability": ..., "device_name": ...} dicts or (name,
    capability) pairs (default: TensorFlow's visible GPUs); an empty list means no GPU.
    """
    requested = str(requested or AUTO).strip().lower()
    if requested not in REQUESTS:
        raise ValueError(f"precision must be one of {', '.join(REQUESTS)}; got {requested!r}")
    cpu_flags, gpus = _hardware(cpu_flags, gpus)
    bf16, fp16, what = _native(cpu_flags, gpus)
    if requested != AUTO:
        if requested == "mixed_bfloat16" and not bf16:
            log.warning(
                "precision mixed_bfloat16 requested but bfloat16 is not native here (%s): it is emulated "
                "and usually slower than float32 (precision auto would pick the fastest)",
                what,
            )
        elif requested == "mixed_float16" and not fp16:
            log.warning(
                "precision mixed_float16 requested but float16 is not native here (%s): it is emulated "
                "and usually slower than float32",
                what,
            )
        return requested, "requested"
    if bf16:
        return "mixed_bfloat16", f"auto: {what} (native bfloat16)"
    if fp16:
        return "mixed_float16", f"auto: {what} (float16, no native bfloat16)"
    if gpus:
        return "float32", f"auto: {what} (no native bfloat16 or float16)"
    return "float32", f"auto: {what} (bfloat16 would be emulated and slower)"


def resolve_export_precision(requested=AUTO, *, cpu_flags=None, gpus=None):
    """(export precision "float32" | "bfloat16", reason) for `deeplab export --precision` (auto,
    float32 or bfloat16): bfloat16 only where it is native, as resolve_precision decides."""
    requested = str(requested or AUTO).strip().lower()
    if requested not in (AUTO,) + EXPORT_PRECISIONS:
        raise ValueError(f"export precision must be one of auto, {', '.join(EXPORT_PRECISIONS)}; got {requested!r}")
    policy, reason = resolve_precision(
        "mixed_bfloat16" if requested == "bfloat16" else requested, cpu_flags=cpu_flags, gpus=gpus
    )
    if policy == "mixed_bfloat16":
        return "bfloat16", reason
    if policy == "mixed_float16":  # the export has no float16 graph
        return "float32", reason.replace("(float16, no native bfloat16)", "(no native bfloat16; float32 export)")
    return "float32", reason


# `atrous_impl: auto`: which kernels run the dilated 3x3 convolutions (models.layers.AtrousConv2D).
ATROUS_IMPLS = ("taps", "stock")
ATROUS_REQUESTS = (AUTO,) + ATROUS_IMPLS


def accelerators():
    """[device names] of the visible GPUs and TPUs (TensorFlow's view)."""
    import tensorflow as tf

    return [d.name for kind in ("GPU", "TPU") for d in tf.config.list_physical_devices(kind)]


def resolve_atrous_impl(requested=AUTO, *, devices=None):
    """(atrous implementation "taps" | "stock", short reason) for `requested` ("auto", "taps" or "stock").

    auto: "taps" (models.layers.atrous_conv2d_same, one matrix product per kernel tap) on a CPU, where TF's dilated
    kernels multiply the zero padding and ran 5-17x slower backward (bench/RESULTS.md); "stock" (the dilated
    tf.nn.conv2d) on a GPU or TPU, whose cuDNN/XLA kernels handle dilation natively and where the per-tap path would
    add eight full-size pads and sums per layer. devices: accelerator names (default: accelerators()); an empty
    list means CPU only.
    """
    requested = str(requested or AUTO).strip().lower()
    if requested not in ATROUS_REQUESTS:
        raise ValueError(f"atrous_impl must be one of {', '.join(ATROUS_REQUESTS)}; got {requested!r}")
    if requested != AUTO:
        return requested, "requested"
    devices = accelerators() if devices is None else list(devices)
    if devices:
        return "stock", f"auto: {devices[0]} (dilated convolution kernels of the accelerator)"
    return "taps", "auto: CPU only (per-tap matrix products)"
