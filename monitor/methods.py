"""HTTP methods: the monitor answers GET and HEAD; any other method gets 405 with `Allow: GET` (contract 2e).

websockets' request parser drops the connection when a request carries a body (a POST with data) before the
router sees it. `MethodGuardConnection` holds a connection's first bytes until the request head is complete; a
request whose method is not GET or HEAD then reaches the router with its body headers removed and its body
discarded, and the router answers 405. GET requests pass through byte for byte.
"""

from __future__ import annotations

from typing import Any

from websockets.asyncio.server import ServerConnection

ALLOWED_METHODS = frozenset({"GET", "HEAD"})
MAX_HEAD_BYTES = 16 * 1024
_BODY_HEADERS = (b"content-length:", b"transfer-encoding:")


def strip_body_headers(head: bytes) -> bytes:
    """A request head (ending in a blank line) without Content-Length and Transfer-Encoding lines."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if not line.lower().startswith(_BODY_HEADERS)]
    return b"\r\n".join(kept) + b"\r\n\r\n"


class MethodGuardConnection(ServerConnection):
    """A websockets server connection that lets requests of any method reach `process_request`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytearray | None = bytearray()  # None once the request head went through
        self._discard = False  # the body of a refused request: never parsed

    def data_received(self, data: bytes) -> None:
        """Pass bytes to websockets once the request head is complete, minus a refused request's body."""
        if self._discard:
            return
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= MAX_HEAD_BYTES:
            return
        buffered, self._head = bytes(self._head), None
        method = buffered.split(b" ", 1)[0]
        if end < 0 or method in (b"GET", b"HEAD"):
            super().data_received(buffered)  # a GET, or a head too long: websockets answers it as usual
            return
        self._discard = True
        super().data_received(strip_body_headers(buffered[: end + 4]))

    def eof_received(self) -> None:
        """Hand a partial head to websockets before the end of the stream, so it reports it as usual."""
        if self._head:
            buffered, self._head = bytes(self._head), None
            super().data_received(buffered)
        return super().eof_received()
