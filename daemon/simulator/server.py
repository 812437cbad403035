"""A small HTTP/1.1 server (anyio + h11) that can misbehave on purpose.

Each listener hands a parsed `Request` to a handler and writes back the
`Response` it returns. A response can also ask for transport faults that a
well-behaved framework would never produce: a delay, no answer at all (the
connection stays open until the client gives up), a TCP reset, or a body cut
short after a full `Content-Length`. Keep-alive is supported because httpx
pools connections.
"""

from __future__ import annotations

import enum
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import anyio
import anyio.abc
import h11
from anyio.abc import SocketAttribute

from daemon.simulator import wire

logger = logging.getLogger("stocksync.simulator")

_RECEIVE_SIZE = 65536
_CLOSED_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


@dataclass
class Request:
    method: str
    path: str
    query: str  # raw, still percent-encoded
    headers: dict[str, str]  # lower-case names
    body: bytes
    listener: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def params(self) -> dict[str, str]:
        """Query parameters plus a form-encoded body; the last value wins."""
        pairs = parse_qsl(self.query, keep_blank_values=True)
        content_type = self.header("content-type") or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = self.body.decode("utf-8", "replace")
            pairs += parse_qsl(form, keep_blank_values=True)
        return dict(pairs)

    def raw_param(self, name: str) -> str | None:
        """A value before percent-decoding (to see `%2C` vs `,`)."""
        found = None
        pieces = self.query.split("&")
        content_type = self.header("content-type") or ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            pieces += self.body.decode("utf-8", "replace").split("&")
        for piece in pieces:
            key, _, value = piece.partition("=")
            if unquote_plus(key) == name:
                found = value
        return found


class Behaviour(enum.Enum):
    NORMAL = "normal"
    HANG = "hang"  # never answer; hold the connection until the peer closes
    RESET = "reset"  # TCP RST instead of an answer
    TRUNCATE = "truncate"  # full Content-Length, half the body, then close


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    behaviour: Behaviour = Behaviour.NORMAL
    delay_s: float = 0.0
    # Called once the exchange is over with the status delivered (None when
    # nothing complete reached the client); the request log and the
    # in-flight limiter hang off this.
    on_done: list[Callable[[int | None], None]] = field(default_factory=list)


def json_response(
    payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = wire.dumps(payload).encode("utf-8")
    return Response(status=status, body=body, headers=list(headers or []))


Handler = Callable[[Request], Awaitable[Response]]


class HttpListener:
    """One loopback port served by one handler."""

    def __init__(self, name: str, handler: Handler, date: Callable[[], str]) -> None:
        self.name = name
        self._handler = handler
        self._date = date
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self.port = 0
        # Connection counts let a test check pooling (C26) from this side.
        self.connections_accepted = 0
        self.connections_open = 0
        self.peak_connections_open = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(SocketAttribute.local_port)  # noqa: S610 not Django
        self._listener = listener

    async def serve(self) -> None:
        if self._listener is None:
            raise RuntimeError(f"{self.name}: open() before serve()")
        async with self._listener:
            await self._listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections_accepted += 1
        self.connections_open += 1
        self.peak_connections_open = max(
            self.peak_connections_open, self.connections_open
        )
        try:
            await self._exchange_all(stream)
        except Exception:
            # One broken connection must not take the listener down with it.
            logger.exception("simulator connection failed")
        finally:
            self.connections_open -= 1

    async def _exchange_all(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request = await self._receive(conn, stream)
                if request is None:
                    return
                response = await self._answer(request)
                delivered = await self._deliver_and_finish(conn, stream, response)
                if not delivered or conn.our_state is not h11.DONE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return

    async def _answer(self, request: Request) -> Response:
        try:
            return await self._handler(request)
        except Exception:
            # A simulator bug must show up as a 500 the test can see, not as
            # a silently dropped connection.
            logger.exception("simulator handler failed")
            return json_response({"s": False, "d": ["simulator error"]}, status=500)

    async def _receive(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None
            if event is h11.NEED_DATA:
                conn.receive_data(await _read(stream))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return self._request(head, bytes(body))
            else:
                return None

    def _request(self, head: h11.Request, body: bytes) -> Request:
        target = head.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Request(
            method=head.method.decode("ascii"),
            path=path,
            query=query,
            headers=headers,
            body=body,
            listener=self.name,
        )

    async def _deliver_and_finish(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, response: Response
    ) -> bool:
        delivered = False
        try:
            delivered = await self._deliver(conn, stream, response)
        finally:
            status = response.status if delivered else None
            for done in response.on_done:
                done(status)
        return delivered

    async def _deliver(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, response: Response
    ) -> bool:
        if response.delay_s > 0:
            await anyio.sleep(response.delay_s)
        if response.behaviour is Behaviour.HANG:
            await _hold_open(stream)
            return False
        if response.behaviour is Behaviour.RESET:
            await _reset(stream)
            return False
        data = conn.send(self._head(response))
        if response.behaviour is Behaviour.TRUNCATE:
            data += conn.send(h11.Data(data=response.body[: len(response.body) // 2]))
            await _send_quietly(stream, data)
            return False
        if response.body:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        return await _send_quietly(stream, data)

    def _head(self, response: Response) -> h11.Response:
        headers = [
            ("Date", self._date()),
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        reason = _reason(response.status)
        return h11.Response(
            status_code=response.status, headers=headers, reason=reason.encode()
        )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def _read(stream: anyio.abc.SocketStream) -> bytes:
    try:
        return await stream.receive(_RECEIVE_SIZE)
    except _CLOSED_ERRORS:
        return b""


async def _send_quietly(stream: anyio.abc.SocketStream, data: bytes) -> bool:
    try:
        await stream.send(data)
    except _CLOSED_ERRORS:
        return False
    return True


async def _hold_open(stream: anyio.abc.SocketStream) -> None:
    """Answer nothing; return once the client closes (or the server stops)."""
    while await _read(stream):
        pass


async def _reset(stream: anyio.abc.SocketStream) -> None:
    # SO_LINGER with a zero timeout turns close() into a RST.
    sock = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 not Django
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()
