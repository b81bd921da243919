"""Bytes only: index maps to entropy-coded payloads, and the .kmq container around them."""

from kmq.codec.entropy import decode_index_map, encode_index_map
from kmq.codec.framing import DEFAULT_MAX_PIXELS
from kmq.codec.image import DecodedImage, ImageInfo, decode_image, encode_image, image_info

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageInfo",
    "decode_image",
    "decode_index_map",
    "encode_image",
    "encode_index_map",
    "image_info",
]
