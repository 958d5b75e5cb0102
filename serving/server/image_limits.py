"""Image dimensions read from the header bytes, before anything is decoded.

A few hundred bytes of PNG can declare 50000 x 50000 pixels (7.5 GB of RGB once decoded), so the
server checks the declared size against its limit first and refuses such "decompression bombs"
without touching the decoder. Formats are the ones `tf.io.decode_image` accepts.
"""

import struct

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageHeaderError(ValueError):
    """The bytes are not a JPEG/PNG/GIF/BMP image, or its header is truncated/corrupt."""


def image_size(data):
    """(format, height, width) declared by the header of an encoded image (bytes)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageHeaderError("truncated PNG header (no IHDR chunk)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", height, width
    if data[:2] == b"\xff\xd8":
        return ("jpeg",) + _jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) < 10:
            raise ImageHeaderError("truncated GIF header")
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", height, width
    if data[:2] == b"BM":
        if len(data) < 26:
            raise ImageHeaderError("truncated BMP header")
        width, height = struct.unpack("<ii", data[18:26])
        return "bmp", abs(height), abs(width)
    raise ImageHeaderError(
        f"not a JPEG, PNG, GIF or BMP image (unknown file signature {data[:8].hex() or 'of an empty string'})"
    )


def _jpeg_size(data):
    """Walk the JPEG markers to the first start-of-frame segment."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageHeaderError(f"corrupt JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return height, width
        if marker == 0xD9 or length < 2:
            break
        i += 2 + length
    raise ImageHeaderError("truncated or corrupt JPEG: no start-of-frame marker with the image size")


def check_image(data, max_pixels, max_side):
    """Raise ImageHeaderError (naming the declared size and the limit) unless the image is acceptable."""
    fmt, height, width = image_size(data)
    if height <= 0 or width <= 0:
        raise ImageHeaderError(f"{fmt.upper()} header declares an empty image ({width}x{height} WxH)")
    if max(height, width) > max_side or height * width > max_pixels:
        raise ImageHeaderError(
            f"{fmt.upper()} image (WxH) declares {width}x{height} pixels, over the server's limit "
            f"({max_pixels} pixels, {max_side} per side); resize it before sending"
        )
    return fmt, height, width
