"""What an uploaded file is, decided from its bytes: the allowlist, and images' size and thumbnail.

The name a client gives is never trusted for the type: ``photo.png`` holding a Windows
executable is refused. Allowed (docs/security.md):

- ``image/png``, ``image/jpeg``, ``image/gif``, ``image/webp`` by their magic numbers, then
  decoded by Pillow (an image Pillow cannot decode is refused);
- ``application/pdf`` by ``%PDF-``;
- ``text/plain; charset=utf-8``: the whole file valid UTF-8 without NUL or other C0 control
  characters but tab, line feed, form feed and carriage return.

Executables are refused by their own magic numbers first (``MZ``, ``\\x7fELF``, Mach-O,
``#!`` scripts), even where the rest would pass as text.
"""
from __future__ import annotations

import codecs
import io
import warnings
from dataclasses import dataclass
from typing import Optional

from PIL import Image

PNG, JPEG, GIF, WEBP, PDF, TEXT = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
                                   "text/plain; charset=utf-8")
IMAGE_TYPES = frozenset((PNG, JPEG, GIF, WEBP))
# Pillow's format name for each image type: a file must decode as what its magic number says.
PILLOW_FORMATS = {PNG: "PNG", JPEG: "JPEG", GIF: "GIF", WEBP: "WEBP"}
SNIFF_BYTES = 16  # what ``sniff`` needs of a file's head
EXECUTABLE_MAGIC = (b"MZ", b"\x7fELF", b"#!", b"\xca\xfe\xba\xbe", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf",
                    b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\x00asm")
# Largest image decoded, in pixels (about 8000 x 6000): a small compressed file may claim a
# huge canvas (a decompression bomb). Pillow refuses twice its own MAX_IMAGE_PIXELS itself;
# ``inspect_image`` refuses anything over it before decoding.
MAX_IMAGE_PIXELS = 48_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
# Pillow only warns between 1x and 2x its bound; ``inspect_image`` refuses that range itself,
# so the warning (one line on stderr per process) says nothing.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
THUMBNAIL_SIZE = (320, 320)  # a thumbnail fits in this box, aspect kept; PNG
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13))


class MediaRefused(Exception):
    """The bytes are not an allowed type (``code``: unsupported_media_type, undecodable_image,
    image_too_large)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def sniff(head: bytes) -> Optional[str]:
    """The content type the first bytes announce: an image, PDF, or None (maybe text: see TextCheck).

    Raises MediaRefused ``unsupported_media_type`` for an executable's magic number.
    """
    if head.startswith(EXECUTABLE_MAGIC):
        raise MediaRefused("unsupported_media_type", "Executables are not accepted")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    return None


class TextCheck:
    """Follows a file chunk by chunk: is all of it plain UTF-8 text? (``ok`` once ``close``\\ d)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.ok = True

    def feed(self, chunk: bytes) -> None:
        """Check the next chunk (call from a worker thread for large files)."""
        if not self.ok:
            return
        try:
            self._decoder.decode(chunk)
        except UnicodeDecodeError:
            self.ok = False
            return
        # bytes below 0x20 are never part of a multi-byte sequence: test the raw chunk (in C)
        if len(chunk.translate(None, _CONTROL)) != len(chunk):
            self.ok = False

    def close(self) -> bool:
        """True when every byte fed was text and no sequence was left unfinished."""
        if self.ok:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.ok = False
        return self.ok


@dataclass(frozen=True)
class ImageInfo:
    """What ``inspect_image`` found: dimensions and a PNG thumbnail."""

    width: int
    height: int
    thumbnail: bytes


def inspect_image(path: str, content_type: str) -> ImageInfo:
    """Decode the image at ``path`` (blocking: run it in a thread): its size and a thumbnail.

    Raises MediaRefused ``image_too_large`` (over MAX_IMAGE_PIXELS, checked from the header
    before any pixel is decoded) or ``undecodable_image`` (not what its magic number says,
    truncated, corrupt).
    """
    try:
        with Image.open(path, formats=[PILLOW_FORMATS[content_type]]) as im:
            width, height = im.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                raise MediaRefused("image_too_large", f"Images may have at most {MAX_IMAGE_PIXELS} pixels")
            im.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale
            im.load()
            # Shrink first, in place: a full-size copy or RGBA conversion would double the memory
            # of a large image (48 million pixels are 192 MB as RGBA).
            im.thumbnail(THUMBNAIL_SIZE)
            thumb = im.convert("RGBA") if im.mode not in ("RGB", "RGBA", "L", "LA") else im.copy()
    except MediaRefused:
        raise
    except Image.DecompressionBombError:
        raise MediaRefused("image_too_large", f"Images may have at most {MAX_IMAGE_PIXELS} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError):
        raise MediaRefused("undecodable_image", "The image could not be decoded") from None
    out = io.BytesIO()
    thumb.save(out, "PNG", optimize=False)
    return ImageInfo(width, height, out.getvalue())

