"""components/atomic_pusher: atomic TF Serving versions, retention, blessing like the standard Pusher."""

import json
import os

import pytest
import tensorflow as tf
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import path_utils, proto_utils

from components.atomic_pusher import executor as pusher
from components.atomic_pusher import spec
from components.atomic_pusher.component import EXECUTOR_SPEC, AtomicPusher, push_destination
from serving.server.manager import list_versions


class _Double(tf.Module):
    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return {"y": x * self.scale}


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory):
    """A Trainer-like `Model` artifact holding a real (small) SavedModel in Format-Serving."""
    model = standard_artifacts.Model()
    model.uri = str(tmp_path_factory.mktemp("trainer") / "model")
    path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    module = _Double()
    tf.saved_model.save(module, path, signatures={"serving_default": module.__call__})
    return model


def _blessing(tmp_path, blessed):
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / f"blessing_{blessed}")
    os.makedirs(blessing.uri, exist_ok=True)
    blessing.set_int_custom_property("blessed", int(blessed))
    if not blessed:
        blessing.set_float_custom_property("miou", 0.31)
        open(os.path.join(blessing.uri, "NOT_BLESSED"), "w").close()
    return blessing


def _push(trained_model, tmp_path, serving_dir, blessed=True, keep=3, name="push"):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / name)
    inputs = {standard_component_specs.MODEL_KEY: [trained_model]}
    if blessed is not None:
        inputs[standard_component_specs.MODEL_BLESSING_KEY] = [_blessing(tmp_path, blessed)]
    exec_properties = {
        standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(push_destination(serving_dir)),
        standard_component_specs.CUSTOM_CONFIG_KEY: json.dumps({spec.KEEP_VERSIONS_KEY: keep}),
    }
    pusher.Executor().Do(inputs, {standard_component_specs.PUSHED_MODEL_KEY: [pushed]}, exec_properties)
    return pushed


def test_push_publishes_a_loadable_version_and_records_it(trained_model, tmp_path):
    serving_dir = tmp_path / "serving"
    pushed = _push(trained_model, tmp_path, serving_dir)
    base = serving_dir / "deeplab"
    versions = list_versions(str(base))
    assert len(versions) == 1
    version_dir = base / str(versions[0])
    assert pushed.get_int_custom_property("pushed") == 1
    assert pushed.get_string_custom_property("pushed_destination") == str(version_dir)
    assert pushed.get_string_custom_property("pushed_version") == str(versions[0])
    assert os.path.exists(os.path.join(pushed.uri, "saved_model.pb"))  # archive copy, as the standard Pusher
    loaded = tf.saved_model.load(str(version_dir))
    assert loaded.signatures["serving_default"](x=tf.constant([1.5]))["y"].numpy().tolist() == [3.0]
    assert not [n for n in os.listdir(base) if n.startswith(pusher.STAGING_PREFIX)]


def test_a_poller_never_sees_a_half_written_version(trained_model, tmp_path, monkeypatch):
    base = str(tmp_path / "serving" / "deeplab")
    seen = []
    real_copy, real_rename = pusher.io_utils.copy_file, pusher.fileio.rename

    def copy_file(src, dst, *args, **kwargs):
        # Mid-copy (saved_model.pb is the last file): what would TF Serving's poll find right now?
        seen.append(("during copy", list_versions(base), pusher.numeric_versions(base)))
        return real_copy(src, dst, *args, **kwargs)

    def rename(src, dst, overwrite=False):
        name = os.path.basename(src)
        assert name.startswith(pusher.STAGING_PREFIX) and not name.isdigit()
        assert os.path.dirname(src) == os.path.dirname(dst)  # same parent: a rename, not a copy
        assert os.path.exists(os.path.join(src, "saved_model.pb")) and os.path.isdir(os.path.join(src, "variables"))
        seen.append(("before rename", list_versions(base), pusher.numeric_versions(base)))
        return real_rename(src, dst, overwrite)

    monkeypatch.setattr(pusher.io_utils, "copy_file", copy_file)
    monkeypatch.setattr(pusher.fileio, "rename", rename)
    pushed = _push(trained_model, tmp_path, str(tmp_path / "serving"))
    assert [s[0] for s in seen] == ["during copy", "before rename"]
    assert all(s[1] == [] and s[2] == [] for s in seen), seen
    assert list_versions(base) == [int(pushed.get_string_custom_property("pushed_version"))]


def test_failed_copy_leaves_no_version_and_no_staging(trained_model, tmp_path, monkeypatch):
    base = tmp_path / "serving" / "deeplab"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pusher.io_utils, "copy_file", broken)
    with pytest.raises(OSError, match="disk full"):
        _push(trained_model, tmp_path, str(tmp_path / "serving"))
    assert os.listdir(base) == []


def test_retention_keeps_the_newest_versions(trained_model, tmp_path):
    serving_dir = tmp_path / "serving"
    base = serving_dir / "deeplab"
    os.makedirs(base / ".tmp-123-deadbeef")  # left by a crashed push
    pushed = [_push(trained_model, tmp_path, serving_dir, keep=2, name=f"push{i}") for i in range(4)]
    versions = [int(p.get_string_custom_property("pushed_version")) for p in pushed]
    assert versions == sorted(set(versions))  # strictly increasing even within one second
    assert list_versions(str(base)) == versions[-2:]
    assert sorted(os.listdir(base)) == sorted(str(v) for v in versions[-2:])


def test_unblessed_model_is_not_pushed_and_the_reason_is_recorded(trained_model, tmp_path, caplog):
    serving_dir = tmp_path / "serving"
    pushed = _push(trained_model, tmp_path, serving_dir, blessed=False)
    assert pushed.get_int_custom_property("pushed") == 0
    reason = pushed.get_string_custom_property(spec.NOT_PUSHED_REASON_KEY)
    assert "is not blessed" in reason and "NOT_BLESSED file present" in reason and "miou" in reason
    assert not os.path.exists(serving_dir)
    assert not os.path.exists(pushed.uri) or not os.listdir(pushed.uri)


def test_without_a_blessing_input_it_pushes_like_the_standard_pusher(trained_model, tmp_path):
    pushed = _push(trained_model, tmp_path, tmp_path / "serving", blessed=None)
    assert pushed.get_int_custom_property("pushed") == 1


def test_component_is_the_standard_pusher_with_this_executor(tmp_path):
    from tfx.components import Pusher
    from tfx.types import Channel

    component = AtomicPusher(
        model=Channel(type=standard_artifacts.Model),
        model_blessing=Channel(type=standard_artifacts.ModelBlessing),
        serving_dir=str(tmp_path),
        keep_versions=5,
    )
    assert isinstance(component, Pusher)
    assert component.executor_spec.executor_class is pusher.Executor
    assert EXECUTOR_SPEC.executor_class is pusher.Executor
    props = component.exec_properties
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(props[standard_component_specs.PUSH_DESTINATION_KEY], destination)
    assert destination.filesystem.base_directory == f"{tmp_path}/deeplab"
    assert json.loads(props[standard_component_specs.CUSTOM_CONFIG_KEY])[spec.KEEP_VERSIONS_KEY] == 5
    assert set(component.outputs) == {standard_component_specs.PUSHED_MODEL_KEY}
    with pytest.raises(ValueError, match="keep_versions"):
        AtomicPusher(model=Channel(type=standard_artifacts.Model), serving_dir=str(tmp_path), keep_versions=0)
