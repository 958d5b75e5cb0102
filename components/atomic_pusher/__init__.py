"""AtomicPusher: the standard TFX Pusher with atomic version publishing and retention; see executor.py.

Its defaults are plain values here (nothing imported), so pipeline/configs.py and `deeplab serve|predict` read them
without TFX; spec.py re-exports them with the keys and the spec.
"""

# The model folder under the serving directory (TF Serving's `<base>/<model_name>/<version>` layout), and the
# numeric versions kept after a push.
DEFAULT_MODEL_NAME = "deeplab"
DEFAULT_KEEP_VERSIONS = 3
