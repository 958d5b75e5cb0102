"""REST client for TF Serving's /v1 API (real tensorflow_model_server or `deeplab serve`).

    client = RestClient("localhost:8501", model_name="deeplab")
    (label_map, _), = client.segment([open("cat.jpg", "rb").read()])   # compact: serving_png
    (label_map, confidence), = client.segment([...], compact=False)    # serving_default, all outputs
    client.status()      # GET /v1/models/deeplab
    client.metadata()    # GET /v1/models/deeplab/metadata
    client.label_map()   # the model's classes (data.label_map.LabelMap): the `label_map` signature

Images travel base64-encoded as {"b64": ...}; requests use the row ("instances") format unless
`columnar=True` ("inputs"). Errors raise ServingClientError carrying TF Serving's error text.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

# numpy and the label map are imported inside the functions that use them: `deeplab predict --help` imports this
# module for its defaults and stays instant.
if TYPE_CHECKING:
    import numpy as np

    from data.label_map import LabelMap

log = logging.getLogger(__name__)

# HTTP status -> the gRPC status name TF Serving maps to it (http_server.cc), for uniform errors.
_CODE_BY_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServingClientError(Exception):
    """A refused or failed request: `code` is the gRPC status name (e.g. 'INVALID_ARGUMENT'),
    `details` the server's own error text, `http_status` set for REST."""

    def __init__(self, code, details, target="", http_status=None):
        self.code, self.details, self.target, self.http_status = code, details, target, http_status
        where = f" ({target})" if target else ""
        http = f" HTTP {http_status}" if http_status else ""
        super().__init__(f"{code}{http}{where}: {details}")


# The clients' defaults (`deeplab predict --timeout / --max-message-mb`): seconds per request, and the largest
# gRPC message in MB (responses of big images or batches need more than gRPC's 4 MB).
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_MESSAGE_MB = 64

# The compact outputs: serving_default/serving_png `segmentation_png` (each image's label map as a
# uint8 PNG) with `height`/`width`; ~1-5 KB per 513x513 image instead of 2 MB of int64 (+1 MB of
# float32 confidence).
COMPACT_OUTPUTS = ("segmentation_png", "height", "width")
COMPACT_SIGNATURE = "serving_png"
# models/export.py's label_map signature: index int32 [B] -> class_names string [B,N], class_colors int32 [B,N,3],
# ignore_label int32 [B]; the clients send index=[0] and read row 0.
LABEL_MAP_SIGNATURE = "label_map"


def decode_label_png(data: Union[bytes, str, Dict[str, str]]) -> np.ndarray:
    """A `segmentation_png` value (bytes, or {"b64": ...} from REST JSON) -> int64 [h, w] label map."""
    import numpy as np
    from PIL import Image

    if isinstance(data, dict):
        data = base64.b64decode(data["b64"])
    elif isinstance(data, str):
        data = data.encode("latin-1")
    with Image.open(io.BytesIO(bytes(data))) as image:
        return np.asarray(image).astype(np.int64)


def crop_batch(outputs: Mapping[str, Any]) -> List[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """serving_default outputs -> [(label_map int64 [h,w], confidence float32 [h,w] or None)] at each
    image's own size: from `segmentation_png` when present (compact), else from the int64
    `segmentation_map` padded to the largest image."""
    import numpy as np

    heights, widths = np.asarray(outputs["height"]), np.asarray(outputs["width"])
    conf = np.asarray(outputs["confidence"]) if "confidence" in outputs else None
    if "segmentation_png" in outputs:
        pngs = outputs["segmentation_png"]
        maps = [decode_label_png(pngs[i]) for i in range(len(heights))]
    else:
        padded = np.asarray(outputs["segmentation_map"])
        maps = [padded[i, :h, :w] for i, (h, w) in enumerate(zip(heights, widths))]
    return [(maps[i], None if conf is None else conf[i, :h, :w]) for i, (h, w) in enumerate(zip(heights, widths))]


def _lacks_compact_output(error):
    """The server's model has no compact output (segmentation_png / the serving_png signature)."""
    return error.code in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION") and (
        "segmentation_png" in error.details or COMPACT_SIGNATURE in error.details
    )


def _text(value):
    import numpy as np

    if isinstance(value, dict):  # {"b64": ...}: a string output that is not valid UTF-8 (or a *_bytes alias)
        value = base64.b64decode(value["b64"])
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def label_map_from_outputs(outputs: Mapping[str, Any], source: str = "the served model") -> LabelMap:
    """The `label_map` signature's outputs (row 0 of each) -> data.label_map.LabelMap (name 'served'): the
    names, the display colours of ids 0..N-1 and the ignore label."""
    import numpy as np

    from data.label_map import LabelMap

    names = [_text(v) for v in np.asarray(outputs["class_names"], dtype=object)[0].tolist()]
    colors = np.asarray(outputs["class_colors"], np.int64)[0].reshape(-1, 3)
    ignore = int(np.asarray(outputs["ignore_label"]).reshape(-1)[0])
    palette, seen = [], set()
    for i, rgb in enumerate(colors.tolist()):
        if tuple(rgb) in seen:  # two classes shown in one colour: a palette maps a colour to one id
            log.warning("%s: classes share the colour %s; class %d keeps the default colour", source, rgb, i)
            continue
        seen.add(tuple(rgb))
        palette.append((tuple(rgb), i))
    return LabelMap(names=tuple(names), ignore_label=ignore, palette=tuple(palette) or None, name="served")


def _lacks_signature(error, name):
    """The server's model has no signature `name`."""
    details = str(error.details or "")
    return (
        error.code in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION")
        and name in details
        and "not found" in details.lower()
    )


def fetch_label_map(call_label_map: Callable[[], Mapping[str, Any]], source: str) -> LabelMap:
    """The served model's classes as a data.label_map.LabelMap: `call_label_map()` returns the `label_map`
    signature's outputs; a model without that signature gets VOC's map, with a warning naming `source`
    (docs/ARCHITECTURE.md, "Compatibility")."""
    from data.label_map import LabelMap

    try:
        outputs = call_label_map()
    except ServingClientError as e:
        if not _lacks_signature(e, LABEL_MAP_SIGNATURE):
            raise
        log.warning(
            "%s: the model has no %s signature (exported before label maps); assuming Pascal VOC's 21 classes",
            source,
            LABEL_MAP_SIGNATURE,
        )
        return LabelMap.voc()
    return label_map_from_outputs(outputs, source)


class ServingClient:
    """What the gRPC and REST clients share: the model they ask for (name, and a version or a version label;
    neither: the latest), seconds per request, and how often a request the server cannot take yet (UNAVAILABLE,
    unreachable) is retried, after `backoff` * 2**attempt seconds."""

    def __init__(
        self,
        server: str,
        model_name: str = "deeplab",
        version: Optional[int] = None,
        version_label: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 3,
        backoff: float = 0.5,
    ):
        self.server, self.model_name = server, model_name
        self.version, self.version_label = version, version_label
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._no_compact = False  # set once the server's model turns out to lack the compact output


class RestClient(ServingClient):
    def __init__(self, server: str, *args: Any, **kwargs: Any):
        """server: 'host:port' or an http(s):// URL; the other arguments are ServingClient's."""
        super().__init__(server, *args, **kwargs)
        self.base = (server if server.startswith(("http://", "https://")) else f"http://{server}").rstrip("/")

    def _model_url(self):
        url = f"{self.base}/v1/models/{self.model_name}"
        if self.version is not None:
            url += f"/versions/{int(self.version)}"
        elif self.version_label:
            url += f"/labels/{self.version_label}"
        return url

    def _request(self, url, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(url, data=data, headers=headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                body = e.read().decode("utf-8", "replace")
                try:
                    details = json.loads(body)["error"]
                except (ValueError, KeyError, TypeError):
                    details = body.strip() or e.reason
                code = _CODE_BY_HTTP.get(e.code, "UNKNOWN")
                if code == "UNAVAILABLE" and attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise ServingClientError(code, details, url, http_status=e.code) from None
            except (urllib.error.URLError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                if attempt < self.retries:
                    log.warning("%s unreachable (%s); retrying in %.1f s", url, reason, self.backoff * 2**attempt)
                    time.sleep(self.backoff * 2**attempt)
                    continue
                raise ServingClientError("UNAVAILABLE", f"cannot reach the server: {reason}", url) from None
            except TimeoutError:
                raise ServingClientError("DEADLINE_EXCEEDED", f"no answer within {self.timeout} s", url) from None
            except http.client.HTTPException as e:  # an answer that is not HTTP/1.x: gRPC speaks HTTP/2 frames
                raise ServingClientError(
                    "UNAVAILABLE",
                    f"{self.base} answered with something that is not HTTP ({type(e).__name__}): this looks like a "
                    f"gRPC port; use --server HOST:8501 with --rest, or drop --rest",
                    url,
                ) from None

    def predict(
        self,
        instances: Optional[list] = None,
        inputs: Optional[Mapping[str, Any]] = None,
        signature: Optional[str] = None,
    ) -> Dict[str, Any]:
        """POST :predict with row `instances` or columnar `inputs`; returns the response JSON
        ({"predictions": ...} or {"outputs": ...})."""
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row format) or inputs= (columnar format)")
        payload = {"instances": instances} if instances is not None else {"inputs": inputs}
        if signature:
            payload["signature_name"] = signature
        return self._request(self._model_url() + ":predict", payload)

    def segment(
        self, encoded_images: Sequence[bytes], batch_size: int = 8, columnar: bool = False, compact: bool = True
    ) -> List[Tuple[np.ndarray, Optional[np.ndarray]]]:
        """Encoded JPEG/PNG bytes -> [(label_map int64 [h,w], confidence float32 [h,w] or None)].

        compact (default): the `serving_png` signature (PNG label maps, no confidence: TF Serving's
        REST API cannot filter outputs, so the compact answer is a signature of its own); falls back
        to serving_default for models exported without it. compact=False: serving_default, with
        the int64 map and the confidence."""
        results = []
        for start in range(0, len(encoded_images), batch_size):
            b64 = [
                {"b64": base64.b64encode(data).decode("ascii")} for data in encoded_images[start : start + batch_size]
            ]
            signature = COMPACT_SIGNATURE if compact and not self._no_compact else "serving_default"
            try:
                outputs = self._segment_call(b64, signature, columnar)
            except ServingClientError as e:
                if signature != COMPACT_SIGNATURE or not _lacks_compact_output(e):
                    raise
                log.info("%s has no %s signature; using serving_default", self.base, COMPACT_SIGNATURE)
                self._no_compact = True
                outputs = self._segment_call(b64, "serving_default", columnar)
            results.extend(crop_batch(outputs))
        return results

    def _segment_call(self, b64, signature, columnar):
        if columnar:
            outputs = self.predict(inputs={"images": b64}, signature=signature)["outputs"]
            return outputs
        rows = self.predict(instances=b64, signature=signature)["predictions"]
        return {k: [row[k] for row in rows] for k in rows[0]}

    def predict_images(self, image: np.ndarray) -> np.ndarray:
        """The reference repo's signature: RGB image uint8/float [H,W,3] -> label map int64 [H,W]."""
        import numpy as np

        image = np.asarray(image, np.float32)
        h, w = image.shape[:2]
        out = self.predict(
            inputs={"images": image[np.newaxis].tolist(), "height": [h], "width": [w]}, signature="predict_images"
        )["outputs"]
        return np.asarray(out, np.int64)[0]

    def label_map(self) -> LabelMap:
        """The served model's classes as a data.label_map.LabelMap (names, display colours, ignore label), from
        its `label_map` signature; VOC's (with a warning) for a model exported without one."""
        return fetch_label_map(
            lambda: self.predict(inputs={"index": [0]}, signature=LABEL_MAP_SIGNATURE)["outputs"], self.base
        )

    def status(self) -> List[Dict[str, Any]]:
        """GET /v1/models/NAME[/versions/N]: the model_version_status list."""
        return self._request(self._model_url())["model_version_status"]

    def metadata(self) -> Dict[str, Any]:
        """GET .../metadata: {signature name: signature_def JSON}."""
        return self._request(self._model_url() + "/metadata")["metadata"]["signature_def"]["signature_def"]
