"""A server process whose one handler never returns, for the bounded-stop test.

Usage: python -m support.stuck_server KEYS_DIR RUNTIME GRACE PORT_FILE
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import grpc

from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.server import ServiceBinding, build_server
from xinrong.v1 import agent_pb2, agent_pb2_grpc


class _Stuck(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def GetAgentInfo(self, request: Any, context: grpc.ServicerContext) -> agent_pb2.GetAgentInfoResponse:
        print("in flight", flush=True)
        threading.Event().wait()  # stuck in the handler's own code, forever
        raise AssertionError("unreachable")


def main() -> int:
    keys, runtime, grace, port_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    running = build_server(
        load_party(party_dir(keys, "provider", "tax")),
        "127.0.0.1:0",
        [
            ServiceBinding(
                "xinrong.v1.AgentService",
                lambda s: agent_pb2_grpc.add_AgentServiceServicer_to_server(_Stuck(), s),
                frozenset({"node"}),
            )
        ],
        runtime=runtime,  # type: ignore[arg-type]
    )
    running.install_signal_handlers(grace=grace)
    running.set_serving(True)
    port_file.write_text(str(running.port))
    running.wait()
    running.stop(grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
