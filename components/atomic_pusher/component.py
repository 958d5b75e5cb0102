"""AtomicPusher: the standard TFX `Pusher` (same spec, inputs, outputs, blessing semantics) whose
executor publishes `<serving_dir>/<model_name>/<version>/` atomically and keeps the newest
`keep_versions` versions.

    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_dir="/srv/models", model_name="deeplab", keep_versions=3)

Existing code that builds a standard `Pusher` can instead pass
`custom_executor_spec=EXECUTOR_SPEC` and `custom_config={"keep_versions": N}`.
"""

from typing import Any, Dict, Optional

from tfx import types
from tfx.components import Pusher
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2

from components.atomic_pusher import executor
from components.atomic_pusher.spec import DEFAULT_KEEP_VERSIONS, DEFAULT_MODEL_NAME, KEEP_VERSIONS_KEY, PusherSpec

EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)


def push_destination(serving_dir, model_name=DEFAULT_MODEL_NAME):
    """The standard filesystem PushDestination for TF Serving's `<base>/<model_name>/<version>` layout."""
    return pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=f"{str(serving_dir).rstrip('/')}/{model_name}")
    )


class AtomicPusher(Pusher):
    """Standard Pusher spec with `components.atomic_pusher.executor.Executor`."""

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = EXECUTOR_SPEC

    def __init__(
        self,
        model: Optional[types.BaseChannel] = None,
        model_blessing: Optional[types.BaseChannel] = None,
        infra_blessing: Optional[types.BaseChannel] = None,
        serving_dir: Optional[str] = None,
        model_name: str = DEFAULT_MODEL_NAME,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
        push_destination_proto: Optional[pusher_pb2.PushDestination] = None,
        custom_config: Optional[Dict[str, Any]] = None,
    ):
        """Args: model/model_blessing/infra_blessing as for Pusher; serving_dir + model_name give the
        push destination `<serving_dir>/<model_name>` (or pass push_destination_proto); keep_versions:
        how many numeric versions to keep after a push (older ones are deleted)."""
        if (serving_dir is None) == (push_destination_proto is None):
            raise ValueError("AtomicPusher needs exactly one of serving_dir= or push_destination_proto=")
        if int(keep_versions) < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        destination = push_destination_proto or push_destination(serving_dir, model_name)
        config = dict(custom_config or {})
        config[KEEP_VERSIONS_KEY] = int(keep_versions)
        super().__init__(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=infra_blessing,
            push_destination=destination,
            custom_config=config,
        )
