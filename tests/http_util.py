"""Raw HTTP for the web tests: requests sent byte for byte, as clients that are not browsers send them."""

from __future__ import annotations

import socket


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are and read the whole answer: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def bad_requests(port: int) -> list[tuple[str, int, dict[str, str], bytes]]:
    """What a server answers to requests aiohttp rejects before routing (and to a path no route has)."""
    cases = {
        "request line over 8,190 bytes": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "NUL in the path": b"GET /\x00x HTTP/1.1\r\nHost: x\r\n\r\n",
        "0xff in the path": b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        "no HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        "unknown path": b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    }
    return [(name, *raw_request(port, request)) for name, request in cases.items()]
