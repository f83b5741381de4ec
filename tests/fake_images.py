"""Tiny image files for the fake dataset trees the data tests build."""

import io

from PIL import Image

_buffer = io.BytesIO()
Image.new("RGB", (12, 8), (200, 30, 30)).save(_buffer, format="JPEG")
JPEG = _buffer.getvalue()  # a valid 12 x 8 JPEG


def write_images(paths):
    """Write JPEG at every path, making the folders."""
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)
