"""A frame sheet: many equal-size frames in one image, row by row, plus where each one lies.

The core has no "list of images" media type, so a frame sequence travels as one `Image` (the
sheet) and one `Numbers` (the layout: a row per frame with its time and rectangle).
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image

from stablecore import Numbers

LAYOUT_COLUMNS = ["time", "x", "y", "width", "height"]
MAX_PIXELS = 80_000_000  # stays under PIL's decompression-bomb warning when read back


def grid(count: int, columns: int) -> tuple[int, int]:
    """(columns, rows) for `count` frames; `columns` 0 picks a near-square grid."""
    columns = columns or math.ceil(math.sqrt(count))
    columns = max(1, min(columns, count))
    return columns, math.ceil(count / columns)


def check_size(count: int, width: int, height: int) -> None:
    if count * width * height > MAX_PIXELS:
        raise ValueError(f"{count} frames of {width}x{height} make a sheet over "
                         f"{MAX_PIXELS // 1_000_000} megapixels: lower fps, shorten the time "
                         "range, or set a smaller width")


def pack(frames: list[PIL.Image.Image], times: list[float], columns: int,
         rate: float) -> tuple[PIL.Image.Image, Numbers]:
    """Paste equal-size frames into a sheet; return it and its layout."""
    width, height = frames[0].size
    check_size(len(frames), width, height)
    cols, rows = grid(len(frames), columns)
    sheet = PIL.Image.new("RGB", (cols * width, rows * height))
    layout = []
    for i, (frame, t) in enumerate(zip(frames, times, strict=True)):
        x, y = (i % cols) * width, (i // cols) * height
        sheet.paste(frame, (x, y))
        layout.append([t, x, y, width, height])
    return sheet, Numbers(np.array(layout), LAYOUT_COLUMNS, rate)


def rects(sheet: PIL.Image.Image, layout: Numbers | None, count: int,
          columns: int) -> list[tuple[int, int, int, int]]:
    """The (x, y, width, height) of each frame: from the layout if given, else from a grid of
    `count` frames in `columns` columns that fills the sheet exactly."""
    if layout is not None:
        if layout.columns != LAYOUT_COLUMNS or layout.values.ndim != 2:
            raise ValueError(f"the layout input must have the columns {LAYOUT_COLUMNS} "
                             f"(from video.to_frames), got {layout.columns}")
        boxes = [tuple(int(v) for v in row[1:5]) for row in layout.values]
    else:
        if count < 1:
            raise ValueError("give the frame count (count > 0) or the layout input")
        cols, rows = grid(count, columns)
        if sheet.width % cols or sheet.height % rows:
            raise ValueError(f"a {sheet.width}x{sheet.height} sheet does not split into "
                             f"{cols} columns x {rows} rows of equal frames")
        w, h = sheet.width // cols, sheet.height // rows
        boxes = [((i % cols) * w, (i // cols) * h, w, h) for i in range(count)]
    sizes = {(w, h) for _, _, w, h in boxes}
    if len(sizes) != 1:
        raise ValueError(f"all frames must have one size, the layout has {sorted(sizes)}")
    for x, y, w, h in boxes:
        if x < 0 or y < 0 or x + w > sheet.width or y + h > sheet.height:
            raise ValueError(f"frame rectangle {(x, y, w, h)} lies outside the "
                             f"{sheet.width}x{sheet.height} sheet")
    return boxes


def unpack(sheet: PIL.Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    pixels = np.asarray(sheet.convert("RGB"))
    return [pixels[y:y + h, x:x + w] for x, y, w, h in boxes]
