"""The still-image API: quantize an image, encode and decode .kmq bytes, compress files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmq.codec import image as image_codec
from kmq.errors import InputError
from kmq.media.files import atomic_output, check_output, read_input_bytes
from kmq.media.images import as_pixels, load_image, max_pixels_from_env
from kmq.media.png import png8_bytes

__all__ = [
    "CompressResult",
    "Quantized",
    "compress",
    "decode_image",
    "decompress",
    "default_output_path",
    "encode_image",
    "quantize",
]

DITHERS = ("none", "fs", "ordered")
SPACES = ("rgb", "oklab")
FORMATS = ("kmq", "png")


@dataclass(frozen=True)
class Quantized:
    """A palette image: ``palette[indices]`` is the picture.

    Attributes
    ----------
    palette : numpy.ndarray
        n×3 (RGB) or n×4 (RGBA) uint8 colours, n <= K.
    indices : numpy.ndarray
        H×W uint8, one palette index per pixel.
    """

    palette: np.ndarray
    indices: np.ndarray

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return int(self.indices.shape[0])

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return int(self.indices.shape[1])

    @property
    def k(self) -> int:
        """Number of palette entries."""
        return int(self.palette.shape[0])

    @property
    def channels(self) -> int:
        """3 for RGB, 4 for RGBA."""
        return int(self.palette.shape[1])

    def to_array(self) -> np.ndarray:
        """The reconstructed image, H×W×3 or H×W×4 uint8 (a palette look-up)."""
        return self.palette[self.indices]

    def to_image(self) -> Any:
        """The reconstructed image as a PIL image (mode RGB or RGBA)."""
        from PIL import Image

        return Image.fromarray(self.to_array())

    def to_png8(self) -> bytes:
        """The image as an indexed PNG file (palette, and tRNS where alpha exists)."""
        return png8_bytes(self.palette, self.indices)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= 256:
        raise InputError(f"K must be a whole number from 2 to 256; got {k!r}")
    return int(k)


def quantize(image: Any, k: int = 64, *, dither: str = "none", space: str = "rgb", seed: int = 0) -> Quantized:
    """Learn a palette of at most ``k`` colours by k-means and map every pixel to it.

    Parameters
    ----------
    image : numpy.ndarray or PIL.Image.Image
        H×W×3 or H×W×4 uint8 array (H×W grey and 16-bit arrays are converted), or a PIL image
        of any mode.
    k : int
        Palette size, 2..256.
    dither : {"none", "fs", "ordered"}
        No dithering (every pixel gets its nearest colour), Floyd–Steinberg, or 8×8 Bayer.
    space : {"rgb", "oklab"}
        Colour space of the clustering: RGB (maximises PSNR) or OKLab (perceptual).
    seed : int
        Seed of the k-means initialisation; the same input, K and seed give the same result.

    Returns
    -------
    Quantized
        Palette and index map.

    Examples
    --------
    >>> import numpy as np, kmq
    >>> pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    >>> q = kmq.quantize(pixels, k=16)
    >>> q.indices.shape, q.palette.shape[0] <= 16
    ((32, 48), True)
    """
    from kmq.quant import quantize_pixels

    k = _check_k(k)
    _check_choice("dither", dither, DITHERS)
    _check_choice("space", space, SPACES)
    pixels = as_pixels(image)
    palette, indices = quantize_pixels(pixels, k, dither=dither, space=space, seed=int(seed))
    return Quantized(palette=palette, indices=indices)


def encode_image(quantized: Quantized, *, method: str = "cm") -> bytes:
    """Encode a palette image as .kmq bytes (see docs/FORMAT.md).

    Parameters
    ----------
    quantized : Quantized
        What :func:`quantize` returned, or any palette and index map.
    method : {"cm", "deflate", "stored"}
        Coding of the index map: context-modelled range coding (smallest), deflate, or none.
    """
    return image_codec.encode_image(quantized.palette, quantized.indices, method=method)


def decode_image(data: bytes | bytearray | memoryview, *, max_pixels: int | None = None) -> Quantized:
    """Decode .kmq bytes into a :class:`Quantized`.

    Raises
    ------
    kmq.errors.FormatError
        Corrupt, truncated or unknown data.
    kmq.errors.LimitError
        The declared size exceeds ``max_pixels``.
    """
    limit = max_pixels_from_env() if max_pixels is None else max_pixels
    decoded = image_codec.decode_image(data, max_pixels=limit)
    return Quantized(palette=decoded.palette, indices=decoded.indices)


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress` wrote, with the sizes a user checks on disk."""

    input_path: Path
    output_path: Path
    width: int
    height: int
    k: int
    input_bytes: int
    output_bytes: int
    format: str
    channels: int = 3
    #: With ``k="auto"``: the bisection that chose K (a :class:`kmq.analysis.autok.AutoK`).
    auto: Any = None

    @property
    def raw_bytes(self) -> int:
        """Size of the image as raw 24-bit RGB (32-bit with alpha)."""
        return self.width * self.height * self.channels

    @property
    def bits_per_pixel(self) -> float:
        """Output bits on disk per pixel."""
        return 8.0 * self.output_bytes / (self.width * self.height)


def default_output_path(path_in: str | os.PathLike, fmt: str = "kmq") -> Path:
    """``photo.jpg`` becomes ``photo.kmq`` (or ``photo-kmq.png`` for PNG8 output)."""
    source = Path(path_in)
    if fmt == "png":
        return source.with_name(source.stem + "-kmq.png")
    return source.with_suffix(".kmq")


def compress(
    path_in: str | os.PathLike,
    path_out: str | os.PathLike | None = None,
    *,
    k: int | str = 64,
    dither: str = "none",
    space: str = "rgb",
    seed: int = 0,
    format: str = "kmq",
    force: bool = False,
    max_pixels: int | None = None,
    target_psnr: float | None = None,
    target_ssim: float | None = None,
) -> CompressResult:
    """Compress an image file to .kmq (or an indexed PNG).

    The output is written to a temporary file and renamed into place, so a failure leaves
    nothing behind; an existing output is kept unless ``force``; the input is never replaced.

    Parameters
    ----------
    path_in : path-like
        Any image Pillow reads.
    path_out : path-like, optional
        Default: :func:`default_output_path`.
    k : int or "auto"
        Palette size as for :func:`quantize`, or ``"auto"``: the smallest K that reaches
        ``target_psnr`` or ``target_ssim``, found by bisection on K.
    dither, space, seed
        As for :func:`quantize`.
    format : {"kmq", "png"}
        .kmq file or indexed PNG (PNG8).
    force : bool
        Replace an existing output.
    max_pixels : int, optional
        Refuse larger inputs (default ``KMQ_MAX_PIXELS`` or the documented limit).
    target_psnr, target_ssim : float, optional
        With ``k="auto"``, exactly one: PSNR in dB, or SSIM, of the result against the input.

    Returns
    -------
    CompressResult
    """
    from kmq.analysis.autok import check_target, smallest_k

    auto = isinstance(k, str) and k == "auto"
    if auto:
        check_target(target_psnr, target_ssim)
    elif target_psnr is not None or target_ssim is not None:
        raise InputError('a quality target (target_psnr, target_ssim) needs k="auto"')
    else:
        k = _check_k(k)
    _check_choice("format", format, FORMATS)
    _check_choice("dither", dither, DITHERS)
    _check_choice("space", space, SPACES)
    out = Path(path_out) if path_out is not None else default_output_path(path_in, format)
    check_output(out, force=force, inputs=(path_in,))
    pixels = load_image(path_in, max_pixels=max_pixels)
    choice = None
    if auto:
        choice = smallest_k(pixels, target_psnr=target_psnr, target_ssim=target_ssim, dither=dither, space=space, seed=seed)
        quantized = Quantized(palette=choice.palette, indices=choice.indices)
    else:
        quantized = quantize(pixels, k, dither=dither, space=space, seed=seed)
    data = quantized.to_png8() if format == "png" else encode_image(quantized)
    with atomic_output(out, force=force, inputs=(path_in,)) as stream:
        stream.write(data)
    return CompressResult(
        input_path=Path(path_in),
        output_path=out,
        width=quantized.width,
        height=quantized.height,
        k=quantized.k,
        input_bytes=Path(path_in).stat().st_size,
        output_bytes=len(data),
        format=format,
        channels=quantized.channels,
        auto=choice,
    )


def decompress(
    path_in: str | os.PathLike,
    path_out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    max_pixels: int | None = None,
) -> Path:
    """Decode a .kmq file to an image file (PNG by default; any format Pillow writes by suffix).

    Returns
    -------
    Path
        The written file.
    """
    source = Path(path_in)
    out = Path(path_out) if path_out is not None else source.with_suffix(".png")
    check_output(out, force=force, inputs=(source,))
    quantized = decode_image(read_input_bytes(source), max_pixels=max_pixels)
    image = quantized.to_image()
    fmt = _pillow_format(out)
    with atomic_output(out, force=force, inputs=(source,)) as stream:
        if fmt == "JPEG" and image.mode == "RGBA":
            image = image.convert("RGB")
        image.save(stream, format=fmt)
    return out


def _pillow_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot tell an image format from the suffix of {path} (use .png, .webp, .tif, ...)")
    return fmt
