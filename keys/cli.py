"""``xinrong keys``: the platform CA and every party's credentials.

In production the CA key lives offline and each party generates its own
keys; ``init`` is the one-machine shortcut the demo and tests use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xinrong.catalog import default_catalog
from xinrong.keys.ca import ROLE_NAMES
from xinrong.keys.layout import ROLE_DIRS, create_ca, load_ca, load_party, party_dir, provision_party


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    catalog = default_catalog()
    providers = list(catalog.providers) if args.providers == "all" else _split(args.providers)
    unknown = [p for p in providers if p not in catalog.providers]
    if unknown:
        print(f"unknown providers {unknown}; the catalog has {sorted(catalog.providers)}", file=sys.stderr)
        return 2
    if (root / "ca" / "ca.key").exists() and not args.force:
        print(f"{root} already holds a CA; use --force to replace everything", file=sys.stderr)
        return 2
    ca = create_ca(root, overwrite=args.force)
    provision_party(ca, root, role="node", party_id="node", overwrite=args.force)
    for name in providers:
        provision_party(ca, root, role="provider", party_id=name, provider=name, overwrite=args.force)
    for inst in _split(args.institutions):
        provision_party(ca, root, role="institution", party_id=inst, overwrite=args.force)
    print(f"CA, node, {len(providers)} providers and {len(_split(args.institutions))} institutions in {root}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    ca = load_ca(root)
    if args.role == "provider" and args.provider not in default_catalog().providers:
        print("a provider needs --provider naming a catalog provider", file=sys.stderr)
        return 2
    directory = provision_party(
        ca,
        root,
        role=args.role,
        party_id=args.id,
        provider=args.provider or "",
        overwrite=args.force,
    )
    print(directory)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    for role, sub in ROLE_DIRS.items():
        base = root / sub
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            creds = load_party(party_dir(root, role, d.name))
            extra = f" provider={creds.binding.provider}" if creds.binding.provider else ""
            print(f"{role:12s} {creds.party_id:24s} signing={creds.signing_key.key_id}{extra}")
    return 0


def register_cli(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_cmd", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("init", help="create a CA and credentials for the node, providers and institutions")
    p.add_argument("--dir", required=True, help="keys directory to create")
    p.add_argument("--providers", default="all", help="comma-separated catalog providers, or 'all'")
    p.add_argument("--institutions", default="bank-a", help="comma-separated institution ids")
    p.add_argument("--force", action="store_true", help="replace an existing keys directory")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("issue", help="issue credentials for one more party with an existing CA")
    p.add_argument("--dir", required=True, help="keys directory holding the platform CA")
    p.add_argument("--role", required=True, choices=ROLE_NAMES, help="the party's role")
    p.add_argument("--id", required=True, help="party id (an institution id, provider name or USCC)")
    p.add_argument("--provider", default="", help="catalog provider name, for role provider")
    p.add_argument("--force", action="store_true", help="replace existing credentials of this party")
    p.set_defaults(func=cmd_issue)
    p = sub.add_parser("show", help="list parties and key ids")
    p.add_argument("--dir", required=True, help="keys directory to describe")
    p.set_defaults(func=cmd_show)
