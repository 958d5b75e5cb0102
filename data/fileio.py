"""File access that works on local disks and on remote file systems (gs://, s3://, hdfs://).

Local paths go through the standard library so that `deeplab synth`, the readers and the tests
do not pay ~15 s for importing TensorFlow; any path with a URL scheme goes through
`tf.io.gfile`, which is what Dataflow workers need.
"""

import os
from typing import List


def is_remote(path: str) -> bool:
    """True for paths with a URL scheme (gs://bucket/..., s3://...), which need tf.io.gfile."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # deferred: only remote paths pay for the import

    return tf.io.gfile


def join(*parts: str) -> str:
    """os.path.join that keeps URL schemes intact (gs://a + b -> gs://a/b)."""
    parts = [str(p) for p in parts]
    if is_remote(parts[0]):
        return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])
    return os.path.join(*parts)


def exists(path: str) -> bool:
    return _gfile().exists(str(path)) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(str(path)) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> List[str]:
    """Entry names of a directory (no trailing slashes), sorted."""
    if is_remote(path):
        return sorted(name.rstrip("/") for name in _gfile().listdir(str(path)))
    return sorted(os.listdir(path))


def read_bytes(path: str) -> bytes:
    """Whole file as bytes. Raises FileNotFoundError (local and remote alike) when it is missing."""
    if is_remote(path):
        import tensorflow as tf

        try:  # one round trip: no exists() call before the read
            with tf.io.gfile.GFile(str(path), "rb") as f:
                return f.read()
        except tf.errors.NotFoundError:
            raise FileNotFoundError(str(path)) from None
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_id_list(path: str) -> List[str]:
    """Ids of a list file, one per line; blank lines and surrounding whitespace are ignored.

    Only the first whitespace-separated token counts, so VOC's per-class lists
    ("2008_000002 -1") and SBD's lists read the same way.
    """
    ids = []
    for line in read_text(path).splitlines():
        fields = line.split()
        if fields:
            ids.append(fields[0])
    return ids


def numbered_children(folder, holds):
    """Sub-folders of `folder` named by a number (TFX artifact ids, TF Serving versions) for which `holds(path)`
    is true, in numeric order ([] when `folder` is not a folder); local or remote."""
    if not isdir(folder):
        return []
    found = [join(folder, n) for n in listdir(folder) if n.isdigit() and holds(join(folder, n))]
    return sorted(found, key=lambda p: int(os.path.basename(p)))


def latest_numbered(path, holds):
    """`path` itself when `holds(path)`, else its highest-numbered sub-folder that holds (the latest version or
    artifact: `deeplab train|evaluate|export` take a folder of them), else None."""
    if holds(path):
        return path
    found = numbered_children(path, holds)
    return found[-1] if found else None
