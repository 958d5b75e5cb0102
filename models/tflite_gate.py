"""The TFLite export's options and its parity gate, as plain values: `deeplab export`'s parser and the TflitePusher
component read them without importing TensorFlow (models/tflite_export.py, which converts and gates, does)."""

QUANTIZE = ("none", "float16", "int8")
DEFAULT_INPUT_SIZE = 513
MIN_REPRESENTATIVE = 100  # training images that calibrate an int8 model
DEFAULT_PARITY_IMAGES = 50  # validation images of the parity gate (all of them when fewer)
FLOAT_MIN_AGREEMENT = 0.99  # float/float16: share of pixels with the SavedModel's label
INT8_MAX_MIOU_DROP = 0.01  # int8: mIoU at most 1.0 point below the SavedModel's


def check_quantize(quantize):
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    return quantize


def check_input_size(input_size):
    size = int(input_size)
    if size < 8:
        raise ValueError(f"input_size must be at least 8 pixels, got {input_size!r}")
    return size
