"""Identify an image by its magic bytes; a Content-Type header is never trusted."""

from __future__ import annotations

# Formats the pipeline accepts as input.
JPEG, PNG, WEBP, GIF, HEIF, AVIF, TIFF = "jpeg", "png", "webp", "gif", "heif", "avif", "tiff"

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff(head: bytes) -> str | None:
    """Return the image format named by the first bytes of ``head``, or None if it is not one.

    Sixteen bytes are enough for every format recognised here.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return AVIF
        if brand in _HEIF_BRANDS:
            return HEIF
    return None
