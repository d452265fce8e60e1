"""A saved model file taken apart and put back together with valid checksums (serialize.py's layout:
magic, version, header length, header JSON, its CRC32, weights from the next 64-byte boundary), so
tests can hand the loader any header they like."""
import json
import struct
import zlib

PREFIX = struct.Struct("<8sIQ")


def align64(n: int) -> int:
    return (n + 63) // 64 * 64


def split_file(data: bytes):
    """((magic, version), header, weights)."""
    magic, version, hlen = PREFIX.unpack(data[:PREFIX.size])
    header = json.loads(data[PREFIX.size:PREFIX.size + hlen])
    return (magic, version), header, data[align64(PREFIX.size + hlen + 4):]


def pack_file(prefix, header, weights: bytes) -> bytes:
    blob = json.dumps(header).encode()
    head = PREFIX.pack(*prefix, len(blob)) + blob + struct.pack("<I", zlib.crc32(blob))
    return head + b"\0" * (align64(len(head)) - len(head)) + weights
