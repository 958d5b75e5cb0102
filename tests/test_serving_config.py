"""serving/config, docker-compose.yml and k8s/: parsed with TF Serving's own protos and YAML."""

import pathlib

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

SERVING = pathlib.Path(__file__).resolve().parents[1] / "serving"


def _upstream_messages():
    """MonitoringConfig and BatchingParameters as declared upstream (tensorflow_serving/config/
    monitoring_config.proto, servables/tensorflow/session_bundle_config.proto): the pip package
    tensorflow-serving-api does not ship those two modules, so their descriptors are built here."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(
        name="serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    T = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = f.message_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, start=1):
            m.field.add(name=field, number=number, type=kind, label=label, type_name=type_name)

    opt, rep = T.LABEL_OPTIONAL, T.LABEL_REPEATED
    message("PrometheusConfig", [("enable", T.TYPE_BOOL, opt, None), ("path", T.TYPE_STRING, opt, None)])
    message("MonitoringConfig", [("prometheus_config", T.TYPE_MESSAGE, opt, ".tensorflow.serving.PrometheusConfig")])
    i64, s = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message(
        "BatchingParameters",
        [
            ("max_batch_size", T.TYPE_MESSAGE, opt, i64),
            ("batch_timeout_micros", T.TYPE_MESSAGE, opt, i64),
            ("max_enqueued_batches", T.TYPE_MESSAGE, opt, i64),
            ("num_batch_threads", T.TYPE_MESSAGE, opt, i64),
            ("thread_pool_name", T.TYPE_MESSAGE, opt, s),
            ("allowed_batch_sizes", T.TYPE_INT64, rep, None),
            ("pad_variable_length_inputs", T.TYPE_BOOL, opt, None),
        ],
    )
    pool.Add(f)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("MonitoringConfig", "BatchingParameters")
    }


def test_models_config_is_a_model_server_config():
    config = text_format.Parse(
        (SERVING / "config/models.config").read_text(), model_server_config_pb2.ModelServerConfig()
    )
    (model,) = config.model_config_list.config
    assert model.name == "deeplab" and model.base_path == "/models/deeplab"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def test_batching_and_monitoring_configs_parse_with_the_upstream_protos():
    messages = _upstream_messages()
    batching = text_format.Parse((SERVING / "config/batching.config").read_text(), messages["BatchingParameters"]())
    assert batching.max_batch_size.value == 4
    assert not batching.pad_variable_length_inputs  # padding would corrupt predict_images (see the file)
    # `deeplab serve` defaults to the same parameters.
    from serving.server import batching as local

    assert (
        local.DEFAULT_MAX_BATCH_SIZE,
        local.DEFAULT_BATCH_TIMEOUT_MICROS,
        local.DEFAULT_NUM_BATCH_THREADS,
        local.DEFAULT_MAX_ENQUEUED_BATCHES,
    ) == (
        batching.max_batch_size.value,
        batching.batch_timeout_micros.value,
        batching.num_batch_threads.value,
        batching.max_enqueued_batches.value,
    )
    # TF Serving's rule: allowed sizes increasing, the last one equal to max_batch_size.
    assert list(batching.allowed_batch_sizes) == sorted(batching.allowed_batch_sizes)
    assert batching.allowed_batch_sizes[-1] == batching.max_batch_size.value
    monitoring = text_format.Parse((SERVING / "config/monitoring.config").read_text(), messages["MonitoringConfig"]())
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path.startswith("/")
    with pytest.raises(text_format.ParseError):  # the parser is strict: a typo would not pass
        text_format.Parse("max_batch_sise { value: 4 }", messages["BatchingParameters"]())


def test_docker_compose_serves_the_push_directory_on_8500_and_8501():
    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    service = compose["services"]["tf-serving"]
    assert service["image"].startswith("tensorflow/serving:")
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    flags = dict(arg.lstrip("-").split("=", 1) for arg in service["command"])
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    assert flags["model_config_file"] == "/config/models.config"
    assert flags["monitoring_config_file"] == "/config/monitoring.config"
    assert flags["enable_model_warmup"] == "true"
    # Server-side batching on, with the BatchingParameters of config/batching.config.
    assert flags["enable_batching"] == "true"
    assert flags["batching_parameters_file"] == "/config/batching.config"
    mounts = {v.rsplit(":", 2)[1]: v for v in service["volumes"]}  # SOURCE:TARGET:ro
    assert "DEEPLAB_SERVING_DIR" in mounts["/models"] and mounts["/config"].startswith("./config:")


def test_k8s_deployment_service_and_configmap():
    docs = {}
    for path in sorted((SERVING / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    assert set(docs) == {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    flags = dict(arg.lstrip("-").split("=", 1) for arg in container["args"])
    assert flags["enable_batching"] == "true" and flags["batching_parameters_file"] == "/config/batching.config"
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"].startswith("/v1/models/deeplab") and probe["port"] == "http"
    assert docs["Deployment"]["spec"]["selector"]["matchLabels"] == docs["Service"]["spec"]["selector"]
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8500, 8501}
    # The ConfigMap carries exactly the files of serving/config.
    for name, text in docs["ConfigMap"]["data"].items():
        assert text == (SERVING / "config" / name).read_text(), name
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
