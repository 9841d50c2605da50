"""Robust reading of image/mask files: clear errors naming the file, documented conversions.

What a source file may be, and what happens to it (`decode_image`, `decode_mask`):

- Image formats: whatever OpenCV decodes (PNG, JPEG, TIFF, BMP, ...). Truncated files are refused: a JPEG
  must end with its end-of-image marker after the last scan, a PNG must end with its IEND chunk, and any
  file the decoder cannot read is refused.
- Grayscale images are **converted** to RGB (the channel is replicated); RGBA images are **converted** to
  RGB (an opaque alpha channel is dropped, a non-opaque one is composited onto black); 16-bit images are
  scaled to 8 bits. Each conversion is returned as a note that the ingest stage logs and counts in the
  manifest. Other pixel types (float, 32-bit) are refused.
- EXIF orientation is applied to images and masks alike, before anything else (a note says so). OpenCV
  already applies it when decoding TIFF, not for JPEG/PNG/...: those are turned here, as PIL's
  `ImageOps.exif_transpose` would.
- Masks are binarised at **half of their own foreground level**, read from the mask's values (its maximum):
  level 1 for a {0, 1} mask (8- or 16-bit; a JPEG one may reach 3 from compression noise, all near 1), else
  255 (8-bit, or a 16-bit file holding 0/255), else 65535. Colour masks use the maximum over the colour
  channels (a mask drawn in pure red is still foreground); a mask whose colour channels are blank (constant)
  but whose alpha channel is not takes its foreground from the alpha channel (a note says so). A mask is
  refused as **non-binary** (ambiguous) when more than 2% of its pixels are neither near 0 nor near the
  level: for 8-bit JPEG/TIFF masks (JPEG noise; the published CVC-ClinicDB TIFFs carry noise at values
  8-14), values between 25% and 75% of the level, and a plateau at exactly 1 under level 255 (a {0, 1} mask
  with stray bright pixels; JPEG noise spreads over 1, 2, 3, ... instead); for PNG/BMP/16-bit masks, which
  must be clean, anything strictly between 0 and 75% of the level (a label map {0, 1, 2}, a soft probability
  map, {0, 4095}).
- An empty mask (no foreground after binarising) is a real case: it is kept, and counted by ingest (so are
  full and mostly-foreground masks).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from siamdiff.utils import SiamdiffError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp"}
NON_BINARY_TOLERANCE = 0.02  # fraction of ambiguous pixels a mask may have before it is refused
JPEG_UNIT_NOISE = 2          # a JPEG {0, 1} mask may reach 1 + this from compression noise
PNG_COMPRESSION = 1          # fast; PNG is lossless at every level


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SiamdiffError(f"{path}: file not found") from None
    except OSError as e:
        raise SiamdiffError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if not data:
        raise SiamdiffError(f"{path}: empty file (0 bytes); replace it with a valid image or remove the pair")
    return data


def _check_complete(data: bytes, name: str) -> None:
    """Refuse truncated JPEG/PNG files, which decoders would otherwise half-decode with a mere warning."""
    what = "; replace it with a complete copy or remove the pair"
    if data[:3] == b"\xff\xd8\xff":  # JPEG: end-of-image must follow the last start-of-scan
        if data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2):
            raise SiamdiffError(f"{name}: truncated JPEG (no end-of-image marker after the image data){what}")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-32:]:
            raise SiamdiffError(f"{name}: truncated PNG (no IEND chunk at the end){what}")


# EXIF orientation (tag 0x0112) -> how to turn the stored pixels upright (as PIL's ImageOps.exif_transpose)
EXIF_TURNS = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
              6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a)}


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8) of an encoded image; 1 when it has none or it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # no or broken EXIF: the pixels as stored (decoding errors are OpenCV's to report)
        return 1


def _orient(arr: np.ndarray, data: bytes, notes: list[str] | None) -> np.ndarray:
    if data[:4] in (b"II*\x00", b"MM\x00*"):  # OpenCV's TIFF decoder applies the orientation itself
        return arr
    o = exif_orientation(data)
    if o not in EXIF_TURNS:
        return arr
    if notes is not None:
        notes.append(f"EXIF orientation {o} applied")
    return np.ascontiguousarray(EXIF_TURNS[o](arr))


def _decode(data: bytes, name: str, notes: list[str] | None = None) -> np.ndarray:
    _check_complete(data, name)
    buf = np.frombuffer(data, dtype=np.uint8)
    quiet = getattr(getattr(cv2, "utils", None), "logging", None)  # our error replaces OpenCV's log lines
    level = quiet.getLogLevel() if quiet else None
    try:
        if quiet:
            quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    finally:
        if quiet:
            quiet.setLogLevel(level)
    if arr is None or arr.size == 0:
        raise SiamdiffError(f"{name}: unreadable or truncated image file; replace it or remove the pair")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise SiamdiffError(f"{name}: unsupported image layout {arr.shape}; expected HxW or HxWx(1|3|4)")
    return _orient(arr, data, notes)


def _to_uint8(arr: np.ndarray, name: str, notes: list[str]) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        notes.append("16-bit converted to 8-bit")
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise SiamdiffError(f"{name}: unsupported pixel type {arr.dtype}; save it as 8- or 16-bit PNG/TIFF/JPEG")


def to_rgb(arr: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """Decoded OpenCV array (BGR order) -> RGB uint8 [H,W,3], with notes on every conversion made."""
    notes: list[str] = []
    arr = _to_uint8(arr, name, notes)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        notes.append("grayscale converted to RGB")
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2)), notes
    if arr.shape[2] == 2:  # gray + alpha
        gray, alpha = arr[:, :, 0], arr[:, :, 1]
        notes.append("grayscale converted to RGB")
        arr = np.repeat(gray[:, :, None], 3, axis=2)
        arr = np.concatenate([arr, alpha[:, :, None]], axis=2)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3]
        if alpha.min() == 255:
            notes.append("RGBA converted to RGB (opaque alpha dropped)")
            arr = arr[:, :, :3]
        else:
            notes.append("RGBA converted to RGB (composited onto black)")
            arr = (arr[:, :, :3].astype(np.uint16) * alpha[:, :, None].astype(np.uint16) + 127) // 255
            arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, ::-1]), notes  # BGR -> RGB (a replicated gray is unaffected)


def decode_image(data: bytes, name: str) -> tuple[np.ndarray, list[str]]:
    """Encoded bytes -> RGB uint8 [H,W,3] and the conversions made (see the module docstring)."""
    notes: list[str] = []
    rgb, more = to_rgb(_decode(data, name, notes), name)
    return rgb, notes + more


def _mask_plane(arr: np.ndarray, notes: list[str] | None) -> np.ndarray:
    """[H,W,C] mask -> [H,W]: max over the colour channels, or the alpha channel when the colour is blank."""
    if arr.shape[2] in (2, 4):
        colour, alpha = arr[:, :, :-1].max(axis=2), arr[:, :, -1]
        if colour.min() == colour.max() and alpha.min() != alpha.max():
            if notes is not None:
                notes.append("foreground taken from the alpha channel (colour channels blank)")
            return alpha
        return colour
    return arr.max(axis=2)


def binarise_mask(arr: np.ndarray, name: str, lossy: bool = False, notes: list[str] | None = None,
                  jpeg: bool = False) -> np.ndarray:
    """Any mask array -> uint8 [H,W] in {0,1}, at half the mask's own foreground level (module docstring).

    `lossy=True` (JPEG/TIFF files) tolerates their noise on 8-bit masks; `False` (PNG/BMP, arrays) wants
    clean masks; `jpeg=True` also lets a {0, 1} mask reach 3. `notes`, a list, receives a note when the
    alpha channel is used.
    """
    if arr.ndim == 3:
        arr = _mask_plane(arr, notes)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype not in (np.uint8, np.uint16):
        raise SiamdiffError(f"{name}: unsupported mask pixel type {arr.dtype}; save masks as 8-bit PNG with values 0/255")
    noisy = lossy and arr.dtype == np.uint8
    top = int(arr.max()) if arr.size else 0
    level = 1 if top <= 1 + (JPEG_UNIT_NOISE if noisy and jpeg else 0) else 255 if top <= 255 else 65535
    if level == 1:  # {0, 1}, or a JPEG one whose overshoot (2, 3) is near 1
        odd = np.zeros(arr.shape, bool)
    elif noisy and top >= 0.75 * level:  # noise near 0 and near the level is tolerated
        odd = (arr > 0.25 * level) & (arr < 0.75 * level)
        ones = arr == 1  # noise spreads over 1, 2, 3, ...; a plateau at 1 is a {0, 1} mask with stray bright pixels
        if np.count_nonzero(ones) > 4 * np.count_nonzero((arr > 1) & (arr <= 0.25 * level)):
            odd |= ones
    else:
        odd = (arr > 0) & (arr < 0.75 * level)
    share = np.count_nonzero(odd) / max(arr.size, 1)
    if share > NON_BINARY_TOLERANCE:
        vals = np.unique(arr)
        shown = ", ".join(str(int(v)) for v in vals[:8]) + (", ..." if len(vals) > 8 else "")
        raise SiamdiffError(
            f"{name}: non-binary mask: {share:.1%} of its pixels are neither 0 nor {level} (values: {shown}), so "
            "which pixels are foreground is ambiguous; save it with two values only, 0 and 255 (or 0 and 1)")
    return (arr >= (level + 1) // 2).astype(np.uint8)


def decode_mask(data: bytes, name: str, notes: list[str] | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 [H,W] in {0,1}. PNG/BMP masks are held to "clean"; JPEG/TIFF ones are not.

    `notes`, a list, receives the conversions made (EXIF orientation, alpha channel used).
    """
    clean = data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"BM"
    jpeg = data[:3] == b"\xff\xd8\xff"
    return binarise_mask(_decode(data, name, notes), name, lossy=not clean, notes=notes, jpeg=jpeg)


def check_pair(image: np.ndarray, mask: np.ndarray, image_name: str, mask_name: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise SiamdiffError(f"{image_name}: expected an RGB uint8 image [H,W,3], got {image.dtype} {image.shape}")
    if mask.ndim != 2:
        raise SiamdiffError(f"{mask_name}: expected a single-channel mask [H,W], got {mask.shape}")
    if image.shape[:2] != mask.shape:
        raise SiamdiffError(
            f"{image_name} is {image.shape[1]}x{image.shape[0]} but its mask {mask_name} is "
            f"{mask.shape[1]}x{mask.shape[0]} (width x height); image and mask must have the same size")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise SiamdiffError(f"{image_name}: image is only {image.shape[1]}x{image.shape[0]} pixels; too small to use")


def encode_png(arr: np.ndarray, rgb: bool = True) -> bytes:
    """RGB uint8 [H,W,3] (or a mask [H,W] in {0,1} with rgb=False, written as {0,255}) -> PNG bytes."""
    if rgb:
        arr = np.ascontiguousarray(arr[:, :, ::-1])
    else:
        arr = (arr > 0).astype(np.uint8) * 255
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise SiamdiffError("could not encode a PNG image (OpenCV imencode failed)")
    return buf.tobytes()


def read_rgb_png(path: str | Path) -> np.ndarray:
    """An ingested image (data/raw) -> RGB uint8 [H,W,3]."""
    image, _ = decode_image(read_bytes(path), str(path))
    return image


def read_mask_png(path: str | Path) -> np.ndarray:
    """An ingested mask (data/raw, values {0,255}) -> uint8 [H,W] in {0,1}."""
    return decode_mask(read_bytes(path), str(path))


# ---------------------------------------------------------------- pictures for people
def outline(image: np.ndarray, mask: np.ndarray, color=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """RGB image with the mask's outline drawn on it (a copy)."""
    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, thickness, lineType=cv2.LINE_AA)
    return out


def thumbnail(image: np.ndarray, mask: np.ndarray, tile: tuple[int, int] = (192, 144), label: str = "") -> np.ndarray:
    """Letter-boxed tile (width, height) of an image with its mask outlined and an optional label."""
    tw, th = tile
    h, w = mask.shape
    s = min(tw / w, th / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    msk = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
    img = outline(img, msk, thickness=1)
    out = np.zeros((th, tw, 3), np.uint8)
    y0, x0 = (th - nh) // 2, (tw - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img
    if label:
        cv2.putText(out, label, (3, th - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def label_band(text: str, width: int, height: int = 18) -> np.ndarray:
    """A white band `width` px wide with `text` in black: column and panel titles of the sample grids."""
    band = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(band, text, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def grid(tiles: Sequence[np.ndarray], columns: int = 6, gap: int = 2, border: int = 0) -> np.ndarray:
    """Tiles of equal size (RGB uint8), row by row, `gap` white pixels apart inside a white `border` -> one RGB picture."""
    if not tiles:
        return np.zeros((8, 8, 3), np.uint8)
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    cols = min(columns, len(tiles))
    out = np.full((rows * (th + gap) - gap + 2 * border, cols * (tw + gap) - gap + 2 * border, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = border + r * (th + gap), border + c * (tw + gap)
        out[y:y + th, x:x + tw] = t
    return out
