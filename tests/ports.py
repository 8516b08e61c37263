"""A free TCP port on 127.0.0.1 for the servers that tests start (moto, Serve, Ray nodes)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it; a race with others is possible)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
