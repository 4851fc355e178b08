"""What real clients put on the wire, read right by the local server `make run` starts.

A raw socket sends what SDKs and proxies may send: chunked bodies (with chunk extensions and
trailers, no Content-Length, no Content-Type, as @sentry/node does), several requests on one
kept-alive connection, ``Expect: 100-continue``, and bodies over the 1 MiB limit, declared or
chunked. Each is then checked as a user would: the answer, whether the connection is still usable,
and what the errors API lists.
"""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.ingest.test_e2e_sentry import Sink, list_errors, new_sink
from tests.test_e2e import Server, call, expect, server

__all__ = ["server"]

LIMIT = 1024 * 1024
TOO_LARGE = {"message": "413 Payload Too Large"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One TCP connection to the server, spoken to in raw HTTP/1.1."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self, *, to_head: bool = False) -> Answer:
        """The next response on the connection (an interim 100 Continue included); one to a HEAD
        request (``to_head``) has no body, whatever its Content-Length says."""
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"the server closed the connection mid-answer: {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if to_head else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "the server closed the connection before the body's end"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True when the server has closed its end (reads give end-of-file) and sent nothing more."""
        try:
            return not self._fill() and self.buffer == b""
        except ConnectionResetError:
            return True


def envelope(message: str) -> bytes:
    event_id = uuid.uuid4().hex
    event = json.dumps({"event_id": event_id, "level": "error", "platform": "node", "message": message})
    return f'{{"event_id":"{event_id}"}}\n{{"type":"event"}}\n{event}\n'.encode()


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 100, *, extension: str = "", trailers: str = "") -> bytes:
    parts = [
        b"%x%s\r\n%s\r\n" % (len(body[i : i + size]), extension.encode(), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n" + trailers.encode() + b"\r\n"


def ingest_target(sink: Sink) -> str:
    return (
        f"/errortracking/api/v1/projects/api/{sink.project.id}/envelope/?sentry_key={sink.public_key}&sentry_version=7"
    )


def titles(server: Server, sink: Sink) -> list[str]:
    return sorted(error["title"] for error in list_errors(server, sink))


@pytest.fixture(scope="module")
def sink(server: Server) -> Sink:
    return new_sink(server, "transport")


def still_serving(server: Server) -> None:
    expect(call(server, "GET", "/user", server.token), 200)


def test_a_chunked_envelope_without_length_or_type_is_stored(server: Server, sink: Sink) -> None:
    """What @sentry/node sends: chunked, no Content-Length, no Content-Type, the key in the query."""
    conn = Connection(server)
    try:
        conn.send(request_head("POST", ingest_target(sink), {"Transfer-Encoding": "chunked"}))
        conn.send(chunked(envelope("chunked from node"), size=37))
        answer = conn.answer()
    finally:
        conn.close()
    assert answer.status == 200, answer
    assert "chunked from node" in titles(server, sink)


def test_chunk_extensions_and_trailers_are_read_past(server: Server, sink: Sink) -> None:
    conn = Connection(server)
    try:
        conn.send(request_head("POST", ingest_target(sink), {"Transfer-Encoding": "chunked", "Trailer": "X-Checksum"}))
        conn.send(chunked(envelope("chunked with trailers"), extension=';name="x"', trailers="X-Checksum: 42\r\n"))
        first = conn.answer()
        # The connection is still in step: the next request on it is answered as itself.
        conn.send(request_head("GET", "/api/v4/user", {"PRIVATE-TOKEN": server.token}))
        second = conn.answer()
    finally:
        conn.close()
    assert first.status == 200, first
    assert second.status == 200 and second.json["username"] == "root", second
    assert "chunked with trailers" in titles(server, sink)


def test_one_kept_alive_connection_carries_several_requests_of_each_framing(server: Server, sink: Sink) -> None:
    conn = Connection(server)
    try:
        answers = []
        for n in range(3):
            conn.send(request_head("POST", ingest_target(sink), {"Transfer-Encoding": "chunked"}))
            conn.send(chunked(envelope(f"kept alive chunked {n}")))
            answers.append(conn.answer())
            body = envelope(f"kept alive sized {n}")
            head = {"Content-Length": str(len(body)), "Content-Type": "application/x-sentry-envelope"}
            conn.send(request_head("POST", ingest_target(sink), head) + body)
            answers.append(conn.answer())
            conn.send(request_head("GET", "/api/v4/user", {"PRIVATE-TOKEN": server.token}))
            answers.append(conn.answer())
    finally:
        conn.close()
    assert [a.status for a in answers] == [200] * 9, answers
    assert [a.json.get("username") for a in answers[2::3]] == ["root"] * 3
    listed = titles(server, sink)
    for n in range(3):
        assert f"kept alive chunked {n}" in listed and f"kept alive sized {n}" in listed, listed


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: Server, sink: Sink) -> None:
    body = envelope("after 100 continue")
    conn = Connection(server)
    try:
        head = {"Content-Length": str(len(body)), "Expect": "100-continue"}
        conn.send(request_head("POST", ingest_target(sink), head))
        interim = conn.answer()  # before a byte of the body was sent
        conn.send(body)
        final = conn.answer()
    finally:
        conn.close()
    assert interim.status == 100, interim
    assert final.status == 200, final
    assert "after 100 continue" in titles(server, sink)


def test_expect_100_continue_over_the_limit_is_413_at_once(server: Server, sink: Sink) -> None:
    conn = Connection(server)
    try:
        conn.send(
            request_head("POST", ingest_target(sink), {"Content-Length": str(LIMIT + 1), "Expect": "100-continue"})
        )
        answer = conn.answer()
        closed = conn.closed_by_server()
    finally:
        conn.close()
    assert (answer.status, answer.json) == (413, TOO_LARGE), answer
    assert answer.headers.get("connection") == "close"
    assert closed
    still_serving(server)


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(server: Server, sink: Sink) -> None:
    conn = Connection(server)
    try:
        conn.send(request_head("POST", ingest_target(sink), {"Content-Length": str(50 * LIMIT)}))
        conn.send(b"x" * 1000)  # far from the declared length: the answer must not wait for the rest
        answer = conn.answer()
        closed = conn.closed_by_server()
    finally:
        conn.close()
    assert (answer.status, answer.json) == (413, TOO_LARGE), answer
    assert closed
    still_serving(server)


def test_a_chunked_body_over_the_limit_is_413_and_the_connection_closed(server: Server, sink: Sink) -> None:
    before = titles(server, sink)
    conn = Connection(server)
    try:
        conn.send(request_head("POST", ingest_target(sink), {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024)
        sent = 0
        try:
            while sent <= 2 * LIMIT:  # the server answers once it has read past 1 MiB, and stops reading
                conn.send(chunk)
                sent += 64 * 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = conn.answer()
        closed = conn.closed_by_server()
    finally:
        conn.close()
    assert (answer.status, answer.json) == (413, TOO_LARGE), answer
    assert closed
    still_serving(server)
    assert titles(server, sink) == before


@pytest.mark.parametrize(
    ("head", "body", "status"),
    [
        ({"Transfer-Encoding": "chunked"}, b"zz\r\nabc\r\n0\r\n\r\n", 400),
        ({"Transfer-Encoding": "chunked"}, b"5\r\nabc", 400),
        ({"Transfer-Encoding": "gzip, chunked"}, b"0\r\n\r\n", 501),
        ({"Transfer-Encoding": "chunked", "Content-Length": "5"}, b"0\r\n\r\n", 400),
        ({"Content-Length": "five"}, b"", 400),
    ],
    ids=["bad-chunk-size", "truncated-chunk", "unknown-coding", "both-framings", "bad-length"],
)
def test_a_body_that_cannot_be_framed_is_refused_in_json_and_the_connection_closed(
    server: Server, sink: Sink, head: dict[str, str], body: bytes, status: int
) -> None:
    conn = Connection(server)
    try:
        conn.send(request_head("POST", ingest_target(sink), head) + body)
        if body == b"5\r\nabc":
            conn.sock.shutdown(socket.SHUT_WR)  # the client gives up mid-chunk
        answer = conn.answer()
        closed = conn.closed_by_server()
    finally:
        conn.close()
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    assert str(answer.json["message"]).startswith(str(status)), answer
    assert closed
    still_serving(server)
