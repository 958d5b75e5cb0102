"""Pictures of label maps: colour masks, overlays and image grids (every mask PNG of the project)."""

import os
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from data.voc import IGNORE_LABEL, VOC_CLASSES, voc_palette


def colorize(label_map: np.ndarray, palette: Optional[np.ndarray] = None) -> np.ndarray:
    """Colours of a label map: uint8 [H, W] class ids -> uint8 [H, W, 3] (VOC colours by default, 255 -> boundary
    cream). palette: uint8 [256, 3] colour per id, e.g. `data.label_map.LabelMap.colors()`."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"colorize expects a [H, W] label map, got shape {label_map.shape}")
    # Ids >= 256 (e.g. int64 predictions gone wrong) wrap around in uint8; clip makes them visible as 255.
    table = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    return table[np.clip(label_map, 0, 255).astype(np.uint8)]


def overlay(
    image: np.ndarray,
    label_map: np.ndarray,
    alpha: float = 0.5,
    show_ignore: bool = True,
    palette: Optional[np.ndarray] = None,
    ignore_label: int = IGNORE_LABEL,
    background: int = 0,
) -> np.ndarray:
    """Blends class colours (VOC's, or `palette`: uint8 [256, 3]) into an RGB image: uint8 [H, W, 3].

    The `background` id (VOC's 0; None for a label map without a background class) stays as the image;
    `ignore_label` (255) pixels are drawn in their palette colour (VOC: the boundary colour) when `show_ignore`,
    else left as the image.
    """
    image = _as_rgb(image)
    label_map = np.asarray(label_map)
    if image.shape[:2] != label_map.shape:
        raise ValueError(f"overlay: image is {image.shape[:2]} but label map is {label_map.shape}")
    colours = colorize(label_map, palette).astype(np.float32)
    mask = np.ones(label_map.shape, bool) if background is None else label_map != background
    if not show_ignore:
        mask &= label_map != ignore_label
    out = image.astype(np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * colours[mask]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def legend(
    class_ids: Iterable[int],
    names: Sequence[str] = VOC_CLASSES,
    swatch: int = 12,
    width: int = 150,
    palette: Optional[np.ndarray] = None,
    ignore_label: int = IGNORE_LABEL,
) -> np.ndarray:
    """A colour key: uint8 [N*(swatch+2), width, 3] with one swatch and name per class id (`ignore_label` =
    'ignore'); palette: uint8 [256, 3] colours (default VOC)."""
    class_ids = [int(c) for c in class_ids]
    row = swatch + 2
    canvas = Image.new("RGB", (width, max(row * len(class_ids), 1)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    for k, c in enumerate(class_ids):
        y = k * row + 1
        draw.rectangle([1, y, swatch, y + swatch - 1], fill=tuple(int(v) for v in palette[c]), outline=(0, 0, 0))
        name = "ignore" if c == ignore_label else (names[c] if c < len(names) else str(c))
        draw.text((swatch + 5, y), f"{c} {name}", fill=(0, 0, 0))
    return np.asarray(canvas)


def _as_rgb(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image[..., :3]


def save_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str,
    titles: Optional[Sequence[str]] = None,
    pad: int = 4,
    background: Tuple[int, int, int] = (255, 255, 255),
) -> str:
    """Writes rows of pictures as one PNG and returns the path.

    rows: list of rows, each a list of images. A 2-D array is a label map and is colourised; a
    [H, W, 3] array is shown as RGB. Cells are top-left aligned in columns as wide as their
    widest picture. titles: None, a list of column headings, or a nested list (one per cell).
    """
    rows = [[colorize(c) if np.asarray(c).ndim == 2 else _as_rgb(c) for c in row] for row in rows]
    if not rows or not any(rows):
        raise ValueError("save_grid needs at least one picture")
    ncols = max(len(r) for r in rows)
    col_w = [max((r[j].shape[1] for r in rows if j < len(r)), default=0) for j in range(ncols)]
    row_h = [max(c.shape[0] for c in r) if r else 0 for r in rows]
    nested = titles is not None and any(isinstance(t, (list, tuple)) for t in titles)
    title_h = 12 if titles is not None else 0
    heading_h = title_h if titles is not None and not nested else 0
    cell_title_h = title_h if nested else 0
    width = sum(col_w) + pad * (ncols + 1)
    height = heading_h + sum(h + cell_title_h for h in row_h) + pad * (len(rows) + 1)
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    if heading_h:
        x = pad
        for j, title in enumerate(titles[:ncols]):
            draw.text((x, 1), str(title), fill=(0, 0, 0))
            x += col_w[j] + pad
    y = pad + heading_h
    for i, row in enumerate(rows):
        x = pad
        for j, cell in enumerate(row):
            if nested and i < len(titles) and j < len(titles[i]):
                draw.text((x, y), str(titles[i][j]), fill=(0, 0, 0))
            canvas.paste(Image.fromarray(cell), (x, y + cell_title_h))
            x += col_w[j] + pad
        y += row_h[i] + cell_title_h + pad
    directory = os.path.dirname(str(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    canvas.save(str(path), format="PNG")
    return str(path)
