"""Run the portal: a socket on 127.0.0.1 only, then uvicorn on it.

The socket is bound here (not by uvicorn) so that port 0 works: the Host
check needs the real port, which is known only after the bind.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path

import uvicorn

from xinrong.enterprise.portal.adapter import ClientBackend
from xinrong.enterprise.portal.app import create_app
from xinrong.enterprise.portal.security import LOOPBACK, check_bind
from xinrong.keys.layout import load_party

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    check_bind(host)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def _write_port_file(path: Path, port: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{port}\n")
    os.replace(tmp, path)


def serve(
    credentials: Path,
    *,
    node: str,
    port: int = 8765,
    host: str = LOOPBACK,
    node_id: str = "node",
    state_dir: Path | None = None,
    port_file: Path | None = None,
) -> int:
    check_bind(host)  # before any key is loaded
    creds = load_party(credentials)
    if creds.role != "enterprise":
        raise ValueError(f"{credentials} holds {creds.role} credentials: the portal needs an enterprise's")
    backend = ClientBackend(node, creds, node_id=node_id, state_dir=state_dir or Path(credentials))
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    app = create_app(backend, port=bound)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, lifespan="off")
    server = uvicorn.Server(config)
    print(f"portal for {creds.party_id}: http://{LOOPBACK}:{bound}/  (node {node})", flush=True)
    if port_file is not None:
        _write_port_file(port_file, bound)
    try:
        server.run(sockets=[sock])
    finally:
        backend.close()
        sock.close()
    return 0
