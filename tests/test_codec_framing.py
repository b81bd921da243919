"""One chunk layout (codec/framing.py) for .kmq chunks and video records: packing, checking, limits."""

from __future__ import annotations

import io
import struct
import zlib

import pytest

from kmq.codec import video
from kmq.codec.framing import (
    CHUNK_HEAD,
    CHUNK_OVERHEAD,
    ByteReader,
    chunk_head,
    pack_chunk,
    read_chunks,
    split_chunk,
    write_container,
)
from kmq.codec.image import MAGIC
from kmq.errors import FormatError


def test_a_chunk_is_type_length_payload_and_crc_of_type_and_payload():
    data = pack_chunk(b"DATA", b"hello")
    assert data[:4] == b"DATA"
    assert struct.unpack_from("<I", data, 4) == (5,)
    assert data[CHUNK_HEAD:-4] == b"hello"
    assert struct.unpack_from("<I", data, len(data) - 4) == (zlib.crc32(b"DATAhello"),)
    assert len(data) == CHUNK_OVERHEAD + 5


def test_split_chunk_gives_back_type_and_payload():
    kind, payload = split_chunk(pack_chunk(b"note", b"\x00\x01\x02"))
    assert kind == b"note" and bytes(payload) == b"\x00\x01\x02"


def test_video_records_are_the_chunks_of_framing():
    assert video.pack_record is pack_chunk
    assert video.split_record is split_chunk


def test_container_chunks_are_packed_chunks():
    container = write_container(MAGIC, [(b"HEAD", b"abc")])
    assert container[5 : 5 + CHUNK_OVERHEAD + 3] == pack_chunk(b"HEAD", b"abc")
    assert container.endswith(pack_chunk(b"TAIL", b""))
    chunks = list(read_chunks(memoryview(container), MAGIC, "test"))
    assert [(chunk.kind, bytes(chunk.payload)) for chunk in chunks] == [(b"HEAD", b"abc")]


@pytest.mark.parametrize("cut", [1, 4, 5, CHUNK_OVERHEAD + 2])
def test_a_truncated_chunk_is_refused(cut):
    with pytest.raises(FormatError, match="truncated"):
        split_chunk(pack_chunk(b"DATA", b"payload")[:-cut])


def test_bytes_after_a_chunk_are_refused():
    with pytest.raises(FormatError, match="unexpected bytes"):
        split_chunk(pack_chunk(b"DATA", b"payload") + b"\0")


def test_a_flipped_bit_fails_the_checksum():
    data = bytearray(pack_chunk(b"DATA", b"payload"))
    data[10] ^= 4
    with pytest.raises(FormatError, match="CRC-32"):
        split_chunk(bytes(data))


def test_a_payload_over_the_limit_is_refused():
    with pytest.raises(FormatError, match="more than the 6"):
        split_chunk(pack_chunk(b"DATA", b"payload"), limit=6)
    assert bytes(split_chunk(pack_chunk(b"DATA", b"payload"), limit=7)[1]) == b"payload"


def test_a_declared_length_is_checked_before_the_payload_is_read():
    huge = struct.pack("<4sI", b"KMQF", 0xFFFFFFF0)
    with pytest.raises(FormatError, match="more than"):
        chunk_head(huge, limit=1 << 20)
    with pytest.raises(FormatError, match="remain"):
        ByteReader(memoryview(huge + b"\0" * 8), "test").chunk()


def test_a_kmqv_frame_record_declaring_more_than_a_frame_can_hold_is_damaged():
    header = video.StreamHeader(8, 6, k=4)
    stream = io.BytesIO(header.to_bytes() + struct.pack("<4sI", video.TAG_FRAME, header.max_payload + 1))
    reader = video.KmqvReader(stream, name="clip")
    with pytest.raises(FormatError, match=r"byte \d+ is damaged .*more than"):
        list(reader.packets())
