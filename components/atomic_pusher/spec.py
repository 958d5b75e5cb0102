"""AtomicPusher's keys, ComponentSpec and defaults: what component.py and executor.py share.

AtomicPusher is the standard Pusher: its ComponentSpec is `PusherSpec` and its channel keys are the standard
ones (`tfx.types.standard_component_specs`); its own setting travels in the standard `custom_config`, so a
standard `Pusher` with `custom_executor_spec` can use the executor too. The defaults are plain values of the
package `__init__` (re-exported here), so pipeline/configs.py can re-export them without importing TFX.
"""

from tfx.types.standard_component_specs import PusherSpec

from components.atomic_pusher import DEFAULT_KEEP_VERSIONS, DEFAULT_MODEL_NAME

__all__ = ["DEFAULT_KEEP_VERSIONS", "DEFAULT_MODEL_NAME", "KEEP_VERSIONS_KEY", "NOT_PUSHED_REASON_KEY", "PusherSpec"]

# custom_config key of the number of versions kept (the snake_case name of AtomicPusher's argument).
KEEP_VERSIONS_KEY = "keep_versions"
# Custom property of the PushedModel artifact: why a model was not pushed (not blessed, ...).
NOT_PUSHED_REASON_KEY = "not_pushed_reason"
