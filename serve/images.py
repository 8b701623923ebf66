"""``image_url`` -> what ``runtime.load_image`` reads: the bytes of a data URL, or a file under one folder.

    data:image/png;base64,iVBORw0...    always accepted (the OpenAI way of sending a local image)
    /abs/path.png, file:///abs/path.png only with --image-folder DIR, and only inside DIR
                                        (resolved: no '..' or symlink leads out of it)
    http://..., https://...             refused: the server never fetches (no SSRF from a robot's LAN)

The pixel limit is checked on the header when the image is read, before decoding
(``runtime.images`` with ``max_pixels``): a decompression bomb costs nothing.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import APIError

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)


def image_source(url: str, image_folder: str | None) -> bytes | Path:
    """Raises APIError (400) for anything that is not an inline image or an allowed file."""
    if url.startswith("data:"):
        return _from_data_url(url)
    if url.startswith(("http://", "https://", "ftp://")):
        raise _bad("this server does not fetch images from URLs; send the image inline as a data URL "
                   "(data:image/png;base64,...)", "url_not_allowed")
    if url.startswith("file://") or url.startswith("/") or url.startswith("~") or ":" not in url.split("/")[0]:
        return _from_folder(url, image_folder)
    raise _bad(f"unsupported image_url scheme {url.split(':')[0][:20]!r}: send a data URL "
               "(data:image/png;base64,...)", "invalid_image_url")


def _from_data_url(url: str) -> bytes:
    head = _DATA_URL.match(url)
    if head is None:
        raise _bad("malformed data URL: expected data:image/<type>;base64,<data>", "invalid_image_url")
    media = (head.group("type") or "").lower()
    if media and not media.startswith("image/"):
        raise _bad(f"the data URL holds {media!r}, not an image (image/png, image/jpeg, ...)", "invalid_image")
    if not head.group("b64"):
        raise _bad("the data URL must be base64-encoded (data:image/png;base64,...)", "invalid_image_url")
    payload = url[head.end():]
    if not payload:
        raise _bad("the data URL holds no data", "invalid_image")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _bad(f"the data URL's base64 is invalid: {e}", "invalid_base64") from None


def _from_folder(url: str, image_folder: str | None) -> Path:
    if image_folder is None:
        raise _bad("local image paths are refused: send the image as a data URL, or start the server with "
                   "--image-folder DIR to allow files from that folder", "path_not_allowed")
    raw = unquote(urlparse(url).path) if url.startswith("file://") else url
    if "\x00" in raw or len(raw) > 4096:
        raise _bad("the image path is not a valid path", "path_not_allowed")
    root = Path(os.path.realpath(Path(image_folder).expanduser()))
    path = Path(raw).expanduser()
    path = Path(os.path.realpath(path if path.is_absolute() else root / path))
    if root != path and root not in path.parents:
        raise _bad(f"image paths must lie inside the allowed folder {str(root)!r}", "path_not_allowed")
    if not path.is_file():
        raise _bad(f"no such image file in the allowed folder: {str(path.relative_to(root))!r}", "invalid_image")
    return path


def _bad(message: str, code: str) -> APIError:
    return APIError(400, message, param="messages", code=code)
