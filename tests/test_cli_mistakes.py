"""What a newcomer hits on the command line: each common mistake ends in one line on stderr naming the problem and
the fix, a non-zero exit status and no traceback; `--help` is argparse's own text, with no TensorFlow imported to
print it; `deeplab train` takes --preset/--set as `run` and `demo` do."""

import concurrent.futures
import json
import os
import socket
import subprocess
import sys

import pytest

import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def deeplab(*args, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "runner.py"), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result):
    """The stderr line of a failed command (exit status non-zero, no traceback, nothing else on stderr but serve's
    `log:` line, which goes there to keep its stdout for the JSON ports line)."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("log: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def listening_port():
    """A port some other server is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("api,flag", [("grpc", "--grpc-port"), ("rest", "--rest-port")])
def test_serve_on_a_port_in_use_names_the_port_and_its_flag_before_loading(tmp_path, listening_port, api, flag):
    ports = {"--grpc-port": 0, "--rest-port": 0, flag: listening_port}
    # No model at all: the port check comes first, so it is what fails (in well under a model's loading time).
    result = deeplab("serve", "--model-base-path", tmp_path / "serving" / "deeplab", *sum(map(list, ports.items()), []))
    line = one_line_error(result)
    assert f"port {listening_port}" in line and "not free" in line and f"{flag} PORT" in line
    assert "gRPC" in line if api == "grpc" else "REST" in line


def test_rest_client_on_a_grpc_port_says_so(tmp_path):
    import grpc

    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 6)).save(image)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = deeplab("predict", "--rest", "--server", f"127.0.0.1:{port}", "--image", image, "--out", tmp_path)
    finally:
        server.stop(0)
    line = one_line_error(result)
    assert "this looks like a gRPC port; use --server HOST:8501 with --rest, or drop --rest" in line


def test_grpc_client_on_a_rest_port_says_so(tmp_path):
    import http.server
    import threading

    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (8, 6)).save(image)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = deeplab("predict", "--server", f"127.0.0.1:{port}", "--image", image, "--out", tmp_path)
    finally:
        server.shutdown()
    line = one_line_error(result)
    assert "this looks like a REST port; use --server HOST:8500 for gRPC, or add --rest" in line


def test_synth_with_a_bad_label_map(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"classes": [')
    line = one_line_error(deeplab("synth", "--output", tmp_path / "out", "--label-map", bad))
    assert line.startswith(f"deeplab synth: --label-map {bad}") and "not valid JSON" in line
    line = one_line_error(deeplab("synth", "--output", tmp_path / "out", "--label-map", tmp_path / "none.json"))
    assert "does not exist" in line


def test_a_recipe_typo_is_caught_before_any_component_runs(tmp_path):
    from data import synthetic

    root = synthetic.generate_voc_dataset(tmp_path / "data", num_train=2, num_val=1, seed=0, min_size=16, max_size=16)
    out = tmp_path / "out"
    line = one_line_error(deeplab("ingest", "--voc-root", root, "--train-recipe", "voc_trian", "--output-dir", out))
    assert line.startswith("--train-recipe voc_trian: unknown split recipe; did you mean 'voc_train'?")
    assert not (out / "pipeline_root").exists() and not (out / "metadata.sqlite").exists()
    line = one_line_error(deeplab("run", "--voc-root", root, "--split-recipe", "val=sbd_vall", "--output-dir", out))
    assert line.startswith("--split-recipe val=sbd_vall: unknown split recipe; did you mean 'sbd_val'?")


def test_train_examples_that_do_not_exist_list_the_ones_that_do(tmp_path):
    examples = tmp_path / "pipeline_root" / "VocExampleGen" / "examples"
    for number in (2, 10):
        for split in ("train", "val"):
            (examples / str(number) / f"Split-{split}").mkdir(parents=True)
    line = one_line_error(deeplab("train", "--examples", examples / "1", "--output-dir", tmp_path / "exp"))
    assert f"--examples {examples / '1'} does not exist" in line
    assert f"{examples / '2'}, {examples / '10'}" in line and f"or pass {examples} for the latest" in line

    from models.cli import resolve_examples

    assert resolve_examples(str(examples)) == str(examples / "10")  # the folder of artifacts: the latest


def test_train_takes_preset_and_set_like_run_and_demo(tmp_path):
    from models import hparams as hparams_lib

    argv = ["train", "--examples", "x", "--output-dir", "y", "--preset", "demo", "--set", "train_steps=20"]
    args = runner.build_parser("train").parse_args(argv + ["--set", "crop_size=65", "--crop-size", "97"])
    hparams = hparams_lib.from_flags(args)
    assert (hparams.train_steps, hparams.crop_size, hparams.backbone) == (20, 97, "mobilenet_v2")  # a field flag wins
    # One definition: the same flags (names, choices, help) in train, run, demo and compile.
    for command in ("run", "demo", "compile"):
        parser = runner.build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        ours = runner.build_parser("train")._subparsers._group_actions[0].choices["train"]
        for flag in ("--preset", "--set"):
            a, b = (next(x for x in p._actions if flag in x.option_strings) for p in (sub, ours))
            assert (a.choices, a.help, a.type, a.metavar) == (b.choices, b.help, b.type, b.metavar)
    out = tmp_path / "exp"
    line = one_line_error(deeplab("train", "--examples", tmp_path, "--output-dir", out, "--set", "learnig_rate=0.1"))
    assert line.startswith("deeplab train: --preset/--set:") and "learnig_rate" in line


# Builds each command's parser in a fresh interpreter and reports which heavy libraries that imported.
_PARSER_IMPORTS = """
import json, sys
import runner
for command in [None] + list(runner.COMMANDS):
    runner.build_parser(command)
heavy = ("tensorflow", "tf_keras", "tfx", "apache_beam", "tensorflow_data_validation", "tensorflow_serving")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def test_building_the_parsers_imports_no_tensorflow():
    result = subprocess.run([sys.executable, "-c", _PARSER_IMPORTS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_help_is_argparse_own_text():
    def run(argv):
        return subprocess.run(
            [sys.executable, os.path.join(REPO, "runner.py"), *argv, "--help"], cwd=REPO, capture_output=True, text=True
        )

    commands = [[]] + [[c] for c in runner.COMMANDS]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, commands))
    for argv, result in zip(commands, results):
        parser = runner.build_parser(argv[0] if argv else None)
        if argv:
            parser = parser._subparsers._group_actions[0].choices[argv[0]]
        assert result.returncode == 0 and result.stderr == "", (argv, result.stderr)
        assert result.stdout.replace("runner.py", "deeplab") == parser.format_help().replace("runner.py", "deeplab")
