"""Pusher executor that publishes TF Serving versions atomically and prunes old ones.

The standard Pusher copies the SavedModel straight into `<base_directory>/<version>/` (saved_model.pb
last). A server polling the directory can still catch a version whose variables are half copied.
Here the model is copied into a hidden staging folder in the same parent (`.tmp-<version>-<id>`,
non-numeric, so TF Serving ignores it) and renamed to `<version>` in one step; on a local or POSIX
file system the version appears complete or not at all. (On GCS a rename is copy+delete; the
standard saved_model.pb-last order is kept inside the staging folder for that case.)

Everything else follows the standard Pusher: the blessing check (unblessed -> not pushed, with the
reason logged and recorded on the artifact), UNIX-timestamp versions, the archive copy in the
PushedModel artifact, and its `pushed`, `pushed_destination`, `pushed_version` properties.
"""

import os
import time
import uuid

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils, proto_utils

from components.atomic_pusher.spec import DEFAULT_KEEP_VERSIONS, KEEP_VERSIONS_KEY, NOT_PUSHED_REASON_KEY
from components.types import ArtifactDict, ExecProperties, optional_property

STAGING_PREFIX = ".tmp-"


def numeric_versions(base_directory):
    """Version numbers (ints) of the numeric sub-directories, ascending; staging folders are ignored."""
    if not fileio.exists(base_directory):
        return []
    return sorted(int(name.rstrip("/")) for name in fileio.listdir(base_directory) if name.rstrip("/").isdigit())


def next_version(base_directory, now=None):
    """UNIX timestamp like the standard Pusher, but always above the newest existing version, so two
    pushes in the same second (or a clock step back) still make a newer version."""
    existing = numeric_versions(base_directory)
    version = int(now if now is not None else time.time())
    return max(version, existing[-1] + 1) if existing else version


def publish_atomically(model_path, base_directory, version):
    """Copy `model_path` to `<base_directory>/<version>` via a staging folder + rename; returns the path."""
    fileio.makedirs(base_directory)
    final = os.path.join(base_directory, str(version))
    staging = os.path.join(base_directory, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        # saved_model.pb last: loaders that watch for it (and GCS, where rename is a copy) see it only
        # once the variables are complete.
        io_utils.copy_dir(model_path, staging, deny_regex_patterns=[r"saved_model\.pb"])
        io_utils.copy_file(os.path.join(model_path, "saved_model.pb"), os.path.join(staging, "saved_model.pb"))
        fileio.rename(staging, final, overwrite=False)
    except BaseException:
        if fileio.exists(staging):
            fileio.rmtree(staging)
        raise
    return final


def prune_versions(base_directory, keep, protect=()):
    """Delete the oldest numeric versions so that `keep` remain (never those in `protect`);
    also removes staging folders left by crashed pushes. Returns the deleted versions."""
    if keep < 1:
        raise ValueError(f"{KEEP_VERSIONS_KEY} must be >= 1, got {keep}")
    for name in fileio.listdir(base_directory):
        name = name.rstrip("/")
        if name.startswith(STAGING_PREFIX):
            logging.warning("Removing stale staging folder %s", os.path.join(base_directory, name))
            fileio.rmtree(os.path.join(base_directory, name))
    versions = numeric_versions(base_directory)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in set(protect)]
    for v in doomed:
        fileio.rmtree(os.path.join(base_directory, str(v)))
    if doomed:
        logging.info("Pruned old versions %s from %s (keeping %d)", doomed, base_directory, keep)
    return doomed


class Executor(pusher_executor.Executor):
    """Drop-in executor for the standard Pusher (same inputs, outputs and push_destination)."""

    def CheckBlessing(self, input_dict: ArtifactDict) -> bool:
        blessed = super().CheckBlessing(input_dict)
        if not blessed:
            self._reason = _not_blessed_reason(input_dict)
            logging.warning("Not pushing: %s", self._reason)
        return blessed

    def Do(self, input_dict: ArtifactDict, output_dict: ArtifactDict, exec_properties: ExecProperties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            model_push.set_string_custom_property(NOT_PUSHED_REASON_KEY, self._reason)
            return
        model_path = self.GetModelPath(input_dict)
        if not fileio.exists(os.path.join(model_path, "saved_model.pb")):
            raise FileNotFoundError(
                f"{model_path} holds no saved_model.pb: the Trainer's Format-Serving "
                "export is missing, nothing TF Serving could load"
            )

        push_destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], push_destination)
        if push_destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(
                f"push_destination must be filesystem, got {push_destination.WhichOneof('destination')}"
            )
        fs_config = push_destination.filesystem
        if fs_config.versioning not in (pusher_pb2.Versioning.AUTO, pusher_pb2.Versioning.UNIX_TIMESTAMP):
            raise NotImplementedError(f"Invalid Versioning {fs_config.versioning}")
        custom_config = json_utils.loads(
            optional_property(exec_properties, standard_component_specs.CUSTOM_CONFIG_KEY, "null")
        )
        custom_config = custom_config or {}  # None: the standard Pusher's custom_config left unset
        keep = custom_config.get(KEEP_VERSIONS_KEY)  # absent: a standard Pusher given this executor
        keep = DEFAULT_KEEP_VERSIONS if keep is None else int(keep)

        base = fs_config.base_directory
        version = next_version(base)
        serving_path = publish_atomically(model_path, base, version)
        logging.info("Model version %d published atomically to %s", version, serving_path)
        prune_versions(base, keep, protect=(version,))

        # Archive copy in the artifact, as the standard Pusher does.
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=str(version))
        logging.info("Model pushed to %s.", model_push.uri)


def _not_blessed_reason(input_dict):
    """Which blessing said no, with its URI and (for the mIoU evaluator) the numbers it recorded."""
    reasons = []
    for key, what in (
        (standard_component_specs.MODEL_BLESSING_KEY, "model blessing"),
        (standard_component_specs.INFRA_BLESSING_KEY, "infra blessing"),
    ):
        artifacts = input_dict.get(key)
        if not artifacts:
            continue
        blessing = artifact_utils.get_single_instance(artifacts)
        if blessing.get_int_custom_property("blessed") == 1:
            continue
        details = {k: _custom(blessing, k) for k in sorted(blessing.mlmd_artifact.custom_properties) if k != "blessed"}
        marker = os.path.join(blessing.uri, "NOT_BLESSED")
        reasons.append(
            f"{what} at {blessing.uri} is not blessed"
            + (" (NOT_BLESSED file present)" if fileio.exists(marker) else "")
            + (f"; its properties: {details}" if details else "")
        )
    return "; ".join(reasons) or "a blessing input did not bless the model"


def _custom(artifact, key):
    value = artifact.mlmd_artifact.custom_properties[key]
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
