"""The Redis protocol (RESP) as bulk writes need it: integers written as text by compiled code
(the command packers of online/row_writes.py), and the replies of many pipelined commands that
each answer +OK read without a Python call per reply."""

from __future__ import annotations

import socket

import hiredis
import numba
import numpy as np
import redis

OK = b"+OK\r\n"


@numba.njit(cache=True, nogil=True, inline="always")
def decimal_size(value):  # type: ignore[no-untyped-def]
    """Characters of str(value) for an int64."""
    size = 1 if value < 0 else 0
    magnitude = np.uint64(-(value + 1)) + np.uint64(1) if value < 0 else np.uint64(value)
    size += 1
    while magnitude >= np.uint64(10):
        magnitude //= np.uint64(10)
        size += 1
    return size


@numba.njit(cache=True, nogil=True, inline="always")
def write_decimal(out, p, value):  # type: ignore[no-untyped-def]
    """Writes str(value) of an int64 at out[p:]; returns the position after it."""
    end = p + decimal_size(value)
    if value < 0:
        out[p] = 45  # '-'
    magnitude = np.uint64(-(value + 1)) + np.uint64(1) if value < 0 else np.uint64(value)
    q = end
    while True:
        q -= 1
        out[q] = 48 + np.uint8(magnitude % np.uint64(10))
        magnitude //= np.uint64(10)
        if magnitude == np.uint64(0):
            break
    return end


@numba.njit(cache=True, nogil=True, inline="always")
def bulk_head_size(length):  # type: ignore[no-untyped-def]
    """Bytes of a bulk string's framing: '$<length>\\r\\n' before it and '\\r\\n' after."""
    return 1 + decimal_size(length) + 4


@numba.njit(cache=True, nogil=True, inline="always")
def write_bulk_head(out, p, length):  # type: ignore[no-untyped-def]
    """Writes '$<length>\\r\\n'; the caller writes the string and `write_crlf` after it."""
    out[p] = 36  # '$'
    p = write_decimal(out, p + 1, length)
    return write_crlf(out, p)


@numba.njit(cache=True, nogil=True, inline="always")
def write_crlf(out, p):  # type: ignore[no-untyped-def]
    out[p] = 13
    out[p + 1] = 10
    return p + 2


@numba.njit(cache=True, nogil=True, inline="always")
def write_bytes(out, p, data):  # type: ignore[no-untyped-def]
    for b in range(data.shape[0]):
        out[p + b] = data[b]
    return p + data.shape[0]


def read_ok_replies(sock: socket.socket, count: int) -> None:
    """Reads the replies of `count` pipelined commands that answer +OK, and raises the first
    error reply among them (redis.ResponseError) after reading them all, so the connection
    stays in step. While every reply is +OK a chunk of them is checked at once; from the
    first other byte on, hiredis parses them one by one."""
    buffer = bytearray(1 << 16)
    view = memoryview(buffer)
    pending, done = b"", 0
    while done < count:
        data = pending + view[:_receive(sock, buffer)].tobytes()
        whole = min(len(data) // len(OK), count - done)
        if data.count(OK, 0, whole * len(OK)) != whole:
            _parse_rest(sock, data, count - done)
            return
        done += whole
        pending = data[whole * len(OK):]
    if pending:
        raise redis.ConnectionError(f"unexpected bytes after {count} replies: {pending[:80]!r}")


def _parse_rest(sock: socket.socket, data: bytes, count: int) -> None:
    reader = hiredis.Reader(replyError=redis.ResponseError)
    reader.feed(data)
    buffer = bytearray(1 << 16)
    failed = None
    for _ in range(count):
        while (reply := reader.gets()) is False:
            reader.feed(buffer, 0, _receive(sock, buffer))
        if isinstance(reply, redis.ResponseError) and failed is None:
            failed = reply
    if failed is not None:
        raise failed


def _receive(sock: socket.socket, buffer: bytearray) -> int:
    try:
        size = sock.recv_into(buffer)
    except TimeoutError:
        raise redis.TimeoutError("timeout reading replies") from None
    except OSError as exc:
        raise redis.ConnectionError(f"error reading replies: {exc}") from None
    if size == 0:
        raise redis.ConnectionError("connection closed by server")
    return size
