"""The pipeline image (Dockerfile, .dockerignore, `make image`) checked against requirements.lock, setup.py's package
layout and the Makefile, without Docker: the Dockerfile is parsed and its COPY/RUN/ENV steps are replayed on paths.

Each check is a function of the files' text, so the negative tests below feed it broken variants and make sure it
fails (a package left out of COPY, the lock copied after the install, another uv, ...).
"""

import ast
import fnmatch
import os
import pathlib
import posixpath
import re
import shlex

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def read(name):
    return (REPO / name).read_text(encoding="utf-8")


# --- Dockerfile parsing -------------------------------------------------------------------------------------------


def parse_dockerfile(text):
    """[(INSTRUCTION, arguments)] with comments dropped and `\\` continuations joined."""
    steps, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continued instruction are ignored by Docker
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            instr, _, args = buf.strip().partition(" ")
            steps.append((instr.upper(), args.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return steps


def final_stage(steps):
    """The steps of the last stage (from its FROM on), the image that is tagged."""
    froms = [i for i, (instr, _) in enumerate(steps) if instr == "FROM"]
    assert froms, "no FROM"
    return steps[froms[-1] :]


def from_images(steps):
    return [args.split()[0] for instr, args in steps if instr == "FROM"]


def copy_args(args):
    """(sources, dest) of a COPY from the build context; None for COPY --from=<stage> or exec-form COPY."""
    words = shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    words = [w for w in words if not w.startswith("--")]
    assert len(words) >= 2, f"COPY {args}"
    return words[:-1], words[-1]


def env_vars(args):
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


# --- .dockerignore ------------------------------------------------------------------------------------------------


def _ignore_regex(pattern):
    pattern = posixpath.normpath(pattern.strip().lstrip("/"))
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(ignore_text):
    """is_excluded(relpath): Docker's rules (last matching pattern wins, `!` re-includes, a matched directory
    excludes everything under it)."""
    rules = []
    for line in ignore_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, _ignore_regex(line[1:] if negate else line)))

    def is_excluded(relpath):
        parts = relpath.split("/")
        prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        excluded = False
        for negate, regex in rules:
            if any(regex.match(p) for p in prefixes):
                excluded = not negate
        return excluded

    return is_excluded


# --- what the image needs -----------------------------------------------------------------------------------------


def setup_layout(setup_text):
    """(top-level packages, py_modules, package_data) of setup.py, read with ast (setup.py is not executed)."""
    call = next(
        n for n in ast.walk(ast.parse(setup_text)) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup"
    )
    kw = {k.arg: k.value for k in call.keywords}
    includes = []
    packages_node = kw["packages"]
    if isinstance(packages_node, ast.Call):  # find_packages(include=[...])
        fkw = {k.arg: k.value for k in packages_node.keywords}
        includes = ast.literal_eval(fkw["include"]) if "include" in fkw else ["*"]
        tops = sorted(
            d.name
            for d in REPO.iterdir()
            if (d / "__init__.py").is_file()
            and d.name != "tests"
            and any(fnmatch.fnmatchcase(d.name, p) for p in includes)
        )
    else:
        tops = sorted({p.split(".")[0] for p in ast.literal_eval(packages_node)})
    modules = ast.literal_eval(kw["py_modules"]) if "py_modules" in kw else []
    package_data = ast.literal_eval(kw["package_data"]) if "package_data" in kw else {}
    return tops, modules, package_data


def needed_files(setup_text):
    """Every source file the installed project consists of, relative to the repo root, plus setup.py and the lock."""
    tops, modules, package_data = setup_layout(setup_text)
    files = ["setup.py", "requirements.lock"] + [f"{m}.py" for m in modules]
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(REPO / top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info")]
            for name in filenames:
                if name.endswith(".py"):
                    files.append((pathlib.Path(dirpath) / name).relative_to(REPO).as_posix())
    for pkg, globs in package_data.items():
        for glob in globs:
            files += [p.relative_to(REPO).as_posix() for p in (REPO / pkg.replace(".", "/")).glob(glob) if p.is_file()]
    return tops, modules, sorted(set(files))


def copy_target(sources, dest, workdir, relpath):
    """Where COPY `sources` `dest` (run in `workdir`) puts build-context file `relpath`, or None if it does not."""
    dest_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
    base = dest if dest.startswith("/") else posixpath.join(workdir, dest)
    for src in sources:
        src_n = posixpath.normpath(src)
        if src_n == ".":
            return posixpath.normpath(posixpath.join(base, relpath))
        if src_n == relpath or _ignore_regex(src_n).match(relpath):  # a file (or a glob matching it)
            return posixpath.normpath(posixpath.join(base, posixpath.basename(relpath)) if dest_dir else base)
        if relpath.startswith(src_n + "/"):  # a directory: its contents go into dest
            return posixpath.normpath(posixpath.join(base, relpath[len(src_n) + 1 :]))
    return None


def replay(steps, files, is_excluded):
    """{relpath: (step index of the COPY that last wrote it, path in the image)}; the final WORKDIR."""
    workdir, placed = "/", {}
    for index, (instr, args) in enumerate(steps):
        if instr == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, args.strip()))
        elif instr in ("COPY", "ADD"):
            parsed = copy_args(args)
            if parsed is None:
                continue
            for rel in files:
                target = copy_target(*parsed, workdir, rel)
                if target is not None and not is_excluded(rel):
                    placed[rel] = (index, target)
    return placed, workdir


def lock_pins(lock_text):
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", lock_text, flags=re.M))


def lock_python_version(lock_text):
    """The Python the lock was resolved for: `--python-version X.Y` in its uv header (and any python markers)."""
    header = re.search(r"--python-version[ =](\d+\.\d+)", lock_text)
    assert header, "requirements.lock's header names no --python-version"
    return header.group(1)


def uv_versions(text):
    return set(re.findall(r"\buv==([0-9][0-9A-Za-z.]*)", text))


def check_image(dockerfile, dockerignore, lock, setup_text, makefile):
    """All the checks; returns a list of problems (empty: the Dockerfile is consistent)."""
    problems = []
    steps = parse_dockerfile(dockerfile)
    stage = final_stage(steps)
    pins = lock_pins(lock)
    lock_py = lock_python_version(lock)

    # The lock pins the stack the image must have, for the Python of the base image.
    if pins.get("tfx") != "1.16.0":
        problems.append(f"requirements.lock pins tfx=={pins.get('tfx')}, not 1.16.0")
    for marker_py in re.findall(r"python_(?:full_)?version\s*==\s*['\"](\d+\.\d+)", lock):
        if marker_py != lock_py:
            problems.append(f"requirements.lock has a python_version == {marker_py} marker, resolved for {lock_py}")
    base = stage[0][1].split()[0]
    m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)(?:[.\-][\w.\-]*)?", base)
    if not m:
        problems.append(f"final base image {base} is not a python:X.Y image, its Python cannot be checked")
    elif m.group(1) != lock_py:
        problems.append(f"base image {base} has Python {m.group(1)}, requirements.lock is for {lock_py}")
    for image in from_images(steps):
        beam = re.search(r"beam_python(\d+\.\d+)_sdk:([\w.]+)", image)
        if beam and (beam.group(1), beam.group(2)) != (lock_py, pins.get("apache-beam")):
            problems.append(
                f"{image}: Beam SDK image for Python {beam.group(1)} / Beam {beam.group(2)}, "
                f"the lock has Python {lock_py} / apache-beam {pins.get('apache-beam')}"
            )

    # uv: the Makefile's version, installing the lock, then the project with --no-deps.
    make_uv, docker_uv = uv_versions(makefile), uv_versions(dockerfile)
    if len(make_uv) != 1:
        problems.append(f"the Makefile pins uv {sorted(make_uv)}, expected one version")
    if docker_uv != make_uv:
        problems.append(f"the Dockerfile pins uv {sorted(docker_uv)}, the Makefile {sorted(make_uv)}")
    runs = [(i, args) for i, (instr, args) in enumerate(stage) if instr == "RUN"]
    lock_installs = [
        i
        for i, args in runs
        if re.search(r"\buv pip install\b", args) and re.search(r"(-r|--requirement)[ =]requirements\.lock\b", args)
    ]
    if not lock_installs:
        problems.append("no RUN installs requirements.lock with `uv pip install -r requirements.lock`")
    elif not all("--compile-bytecode" in stage[i][1] for i in lock_installs):
        problems.append("the lock install lacks --compile-bytecode (the Makefile's setup uses it)")
    project_installs = [
        i
        for i, args in runs
        if re.search(r"\buv pip install\b", args)
        and "--no-deps" in args
        and re.search(r"(?:\s|^)(?:-e\s+)?\.(?:\s|$)", args)
    ]
    if not project_installs:
        problems.append("no RUN installs the project with `uv pip install --no-deps .`")
    elif lock_installs and min(project_installs) < min(lock_installs):
        problems.append("the project is installed before the lock")

    # ENV TF_USE_LEGACY_KERAS=1 in the tagged image.
    env = {}
    for instr, args in stage:
        if instr == "ENV":
            env.update(env_vars(args))
    if env.get("TF_USE_LEGACY_KERAS") != "1":
        problems.append(f"ENV TF_USE_LEGACY_KERAS is {env.get('TF_USE_LEGACY_KERAS')!r}, not '1'")

    # Every file of the project lands in WORKDIR at its repo path, not excluded by .dockerignore; the lock and
    # setup.py land before the lock install, the packages after it (code edits keep the dependency layer cached).
    tops, modules, files = needed_files(setup_text)
    is_excluded = dockerignore_excludes(dockerignore)
    for rel in files:
        if is_excluded(rel):
            problems.append(f"{rel} is excluded by .dockerignore")
    placed, workdir = replay(stage, files, is_excluded)
    if workdir == "/":
        problems.append("no WORKDIR")
    for rel in files:
        if rel not in placed:
            problems.append(f"{rel} is not COPY'd into the image")
        elif placed[rel][1] != posixpath.join(workdir, rel):
            problems.append(f"{rel} is copied to {placed[rel][1]}, not {posixpath.join(workdir, rel)}")
    if lock_installs:
        first_install = min(lock_installs)
        for rel in ("requirements.lock", "setup.py"):
            if rel in placed and placed[rel][0] > first_install:
                problems.append(f"{rel} is copied after the lock install (every change would rebuild it)")
        for rel in files:
            if rel not in ("requirements.lock", "setup.py") and rel in placed and placed[rel][0] < first_install:
                problems.append(f"{rel} is copied before the lock install: each code edit reinstalls the stack")
                break
    if project_installs:
        for rel in files:
            if rel in placed and placed[rel][0] > max(project_installs):
                problems.append(f"{rel} is copied after the project install")
                break
    if not {"pipeline", "components", "models", "data", "serving"} <= set(tops) or "runner" not in modules:
        problems.append(f"setup.py's layout changed ({tops}, {modules}): update this test's expectations")
    return problems


def current():
    return dict(
        dockerfile=read("Dockerfile"),
        dockerignore=read(".dockerignore"),
        lock=read("requirements.lock"),
        setup_text=read("setup.py"),
        makefile=read("Makefile"),
    )


# --- the tests ----------------------------------------------------------------------------------------------------


def test_dockerfile_matches_lock_layout_and_makefile():
    assert check_image(**current()) == []


def test_lock_is_tfx_1_16_for_python_3_11():
    lock = read("requirements.lock")
    assert lock_pins(lock)["tfx"] == "1.16.0"
    assert lock_python_version(lock) == "3.11"


def test_project_installed_in_workdir_with_entry_points_usable():
    steps = final_stage(parse_dockerfile(read("Dockerfile")))
    workdirs = [args for instr, args in steps if instr == "WORKDIR"]
    assert workdirs and workdirs[-1].startswith("/")
    # setup.py stays beside the packages in WORKDIR for Beam's --setup_file=./setup.py.
    placed, workdir = replay(steps, ["setup.py"], dockerignore_excludes(read(".dockerignore")))
    assert placed["setup.py"][1] == posixpath.join(workdir, "setup.py")


def test_make_image_target():
    makefile = read("Makefile")
    assert re.search(r"^IMAGE \?= deeplab-tfx:latest$", makefile, flags=re.M)
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split()
    assert "image" in phony
    recipe = re.search(r"^image:.*\n((?:\t.*\n?)+)", makefile, flags=re.M).group(1)
    assert "command -v docker" in recipe and "exit 1" in recipe
    assert "docker build -t $(IMAGE) ." in recipe


def _drop_line(text, line):
    assert line in text.splitlines(), line
    return "\n".join(kept for kept in text.splitlines() if kept != line) + "\n"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda f: f.update(dockerfile=_drop_line(f["dockerfile"], "COPY data/ data/")),
            "data/__init__.py is not COPY'd",
        ),
        (lambda f: f.update(dockerfile=_drop_line(f["dockerfile"], "COPY runner.py ./")), "runner.py is not COPY'd"),
        (
            lambda f: f.update(dockerignore=f["dockerignore"] + "serving/k8s\n"),
            "serving/k8s/deployment.yaml is excluded by .dockerignore",
        ),
        (
            lambda f: f.update(dockerfile=f["dockerfile"].replace("COPY models/ models/", "COPY models/ ./")),
            "models/__init__.py is copied to /",
        ),
        (lambda f: f.update(dockerfile=f["dockerfile"].replace("uv==0.13.9", "uv==0.4.0")), "the Dockerfile pins uv"),
        (
            lambda f: f.update(dockerfile=f["dockerfile"].replace("FROM python:3.11-slim", "FROM python:3.10-slim")),
            "has Python 3.10, requirements.lock is for 3.11",
        ),
        (
            lambda f: f.update(
                dockerfile=f["dockerfile"].replace("FROM python:3.11-slim", "FROM tensorflow/tfx:1.16.0")
            ),
            "is not a python:X.Y image",
        ),
        (
            lambda f: f.update(dockerfile=f["dockerfile"].replace("-r requirements.lock", "tfx==1.16.0")),
            "no RUN installs requirements.lock",
        ),
        (
            lambda f: f.update(dockerfile=f["dockerfile"].replace("TF_USE_LEGACY_KERAS=1", "TF_USE_LEGACY_KERAS=0")),
            "TF_USE_LEGACY_KERAS",
        ),
        (
            lambda f: f.update(
                dockerfile=f["dockerfile"]
                .replace("COPY requirements.lock setup.py ./\n", "")
                .replace("COPY runner.py ./", "COPY requirements.lock setup.py runner.py ./")
            ),
            "requirements.lock is copied after the lock install",
        ),
        (
            lambda f: f.update(
                dockerfile=f["dockerfile"]
                .replace("COPY runner.py ./\n", "")
                .replace("COPY requirements.lock setup.py ./", "COPY requirements.lock setup.py runner.py ./")
            ),
            "runner.py is copied before the lock install",
        ),
        (lambda f: f.update(lock=f["lock"].replace("\ntfx==1.16.0\n", "\ntfx==1.15.1\n")), "pins tfx==1.15.1"),
    ],
)
def test_checks_catch_broken_images(mutate, expected):
    files = current()
    mutate(files)
    problems = check_image(**files)
    assert any(expected in p for p in problems), problems


def test_kubeflow_schema_path_is_where_the_image_puts_the_schema():
    """`deeplab compile` points ImportSchemaGen at the schema inside the image, not at this checkout."""
    from pipeline import configs

    workdir = [
        line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("WORKDIR")
    ][-1]
    relative = os.path.relpath(configs.SCHEMA_FILE, REPO)
    assert configs.KUBEFLOW_SCHEMA_FILE == posixpath.join(workdir, relative)
    assert any(line.startswith("COPY pipeline/ pipeline/") for line in (REPO / "Dockerfile").read_text().splitlines())
