"""``xinrong node matching run``: match every active product (or one) now, on the running node.

The run happens inside the node (it holds the consents and the one admission
path); this command is its operator's trigger, over mTLS with the node's own
certificate (``ProductService.RunMatching`` admits no other caller).
"""

from __future__ import annotations

import argparse
import json

import grpc

from xinrong.keys.layout import load_party
from xinrong.node.config import load_config
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import products_pb2, products_pb2_grpc


def _matching_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    creds = load_party(config.credentials, ca_cert=config.ca_cert)
    target = args.node or config.bind
    if target.endswith(":0"):
        raise ValueError("the config binds port 0: give --node host:port of the running node")
    channel = secure_channel(target, creds, server_role="node", server_id=creds.party_id)
    try:
        stub = products_pb2_grpc.ProductServiceStub(channel)
        resp = stub.RunMatching(products_pb2.RunMatchingRequest(product_id=args.product), timeout=args.timeout)
    except grpc.RpcError as err:
        raise decode_rpc_error(err) from None
    finally:
        channel.close()
    print(
        json.dumps(
            {
                "products": resp.products,
                "pairs": resp.pairs,
                "refused": resp.refused,
                "seconds": round(resp.seconds, 3),
                "phases": {
                    "admission": round(resp.admission_seconds, 3),
                    "agents": round(resp.agents_seconds, 3),
                    "store": round(resp.store_seconds, 3),
                },
            }
        )
    )
    return 0


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    matching = sub.add_parser("matching", help="loan-product matching without raw data")
    matching_sub = matching.add_subparsers(dest="matching_verb", metavar="COMMAND")
    matching_sub.required = True
    run = matching_sub.add_parser("run", help="match every enterprise with a matching consent against products now")
    run.add_argument("--config", required=True, help="node TOML config (its credentials call the running node)")
    run.add_argument("--node", default="", help="the running node's address (default: [node].bind)")
    run.add_argument("--product", default="", help="only this product (default: every active one)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the run")
    run.set_defaults(func=_matching_run)
