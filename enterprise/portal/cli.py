"""``xinrong enterprise portal``: the enterprise's web page on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from xinrong.enterprise.portal.security import LOOPBACK, check_bind


def cmd_portal(args: argparse.Namespace) -> int:
    check_bind(args.host)
    from xinrong.enterprise.portal.server import serve  # the web stack only for this verb

    return serve(
        Path(args.credentials),
        node=args.node,
        port=args.port,
        host=args.host,
        node_id=args.node_id,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        port_file=Path(args.port_file) if args.port_file else None,
    )


def register_portal(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "portal",
        help="serve the enterprise's web page on 127.0.0.1 (my data, accesses, consents, objections, repairs)",
    )
    p.add_argument("--credentials", required=True, help="the enterprise's credentials directory")
    p.add_argument("--node", default="127.0.0.1:7443", help="node address host:port (default 127.0.0.1:7443)")
    p.add_argument("--node-id", default="node", help="the node's party id, pinned in its certificate")
    p.add_argument("--port", type=int, default=8765, help="local port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default=LOOPBACK, help=f"only {LOOPBACK} is accepted: the page acts with your key")
    p.add_argument(
        "--state-dir", default="", help="granted consents and the log witness (default: the credentials directory)"
    )
    p.add_argument("--port-file", default="", help="write the bound port here once listening (for --port 0)")
    p.set_defaults(func=cmd_portal)
