"""Streamed writes in parts: every cloud's ``open_write`` buffers what it is given and hands it
on in parts of a fixed size (S3 multipart parts, Azure staged blocks, GCS resumable chunks), so
memory is one part whatever the output's size. Each adapter says only how a part is sent and
how the object is published."""

from __future__ import annotations

import io
from typing import Any


class PartWriter(io.RawIOBase):
    """Buffers writes and calls :meth:`_send_part` with each full part.

    ``keep_last`` holds back the final full part until the adapter publishes (a resumable
    upload's last chunk must carry the total size). :attr:`bytes_written` counts everything.
    """

    def __init__(self, part_bytes: int, *, keep_last: bool = False) -> None:
        self._part_bytes = part_bytes
        self._keep_last = keep_last
        self._buffer = bytearray()
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self.bytes_written += len(view)
        size = self._part_bytes
        while len(self._buffer) > size or (not self._keep_last and len(self._buffer) == size):
            self._send_part(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return len(view)

    def _send_part(self, part: bytes) -> None:
        """Send one full part (the store's own call)."""
        raise NotImplementedError

    def _rest(self) -> bytes:
        """What is left in the buffer, which is then empty (the last part, or a small object)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
