"""kmq: image and video compression by k-means colour quantization.

The public API. Names load on first use, so ``import kmq`` and the ``kmq`` command start fast.

Examples
--------
>>> import numpy as np, kmq
>>> pixels = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
>>> q = kmq.quantize(pixels, k=8)
>>> restored = kmq.decode_image(kmq.encode_image(q))
>>> bool((restored.indices == q.indices).all())
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Quantized": "kmq.media.still",
    "CompressResult": "kmq.media.still",
    "quantize": "kmq.media.still",
    "encode_image": "kmq.media.still",
    "decode_image": "kmq.media.still",
    "compress": "kmq.media.still",
    "decompress": "kmq.media.still",
    "load_image": "kmq.media.images",
    "psnr": "kmq.analysis.metrics",
    "ssim": "kmq.analysis.metrics",
    "KmqError": "kmq.errors",
    "InputError": "kmq.errors",
    "LimitError": "kmq.errors",
    "FormatError": "kmq.errors",
    "OutputError": "kmq.errors",
    "VideoEncoder": "kmq.media.video_encoder",
    "EncodedFrame": "kmq.media.video_encoder",
    "VideoDecoder": "kmq.codec.video",
    "DecodedFrame": "kmq.codec.video",
    "StreamHeader": "kmq.codec.video",
    "open_video": "kmq.media.video",
    "encode_video": "kmq.media.video",
    "decode_video": "kmq.media.video",
    "export_video": "kmq.media.video",
    "VideoSource": "kmq.media.video_source",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from kmq.analysis.metrics import psnr, ssim
    from kmq.errors import FormatError, InputError, KmqError, LimitError, OutputError
    from kmq.media.images import load_image
    from kmq.media.still import (
        CompressResult,
        Quantized,
        compress,
        decode_image,
        decompress,
        encode_image,
        quantize,
    )
    from kmq.codec.video import DecodedFrame, StreamHeader, VideoDecoder
    from kmq.media.video import decode_video, encode_video, export_video, open_video
    from kmq.media.video_encoder import EncodedFrame, VideoEncoder
    from kmq.media.video_source import VideoSource


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kmq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
