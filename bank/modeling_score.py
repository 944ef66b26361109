"""``xinrong bank score``: private scoring of enterprises with a finished joint model.

    xinrong bank score --model DIR --enterprise USCC --consent FILE [--json]
    xinrong bank score --model DIR --input CSV --output CSV

Each enterprise needs its signed consent to this bank for purpose
``credit_scoring`` (registered with the node here, as ``bank verify`` does);
the node checks it like a Verify and counts a use, every provider re-checks
it, encrypts its partial score under a fresh key only this bank holds, the
node adds the ciphertexts, and only this bank decrypts the sum. Output:
probability of default, scorecard points (600 at 50:1 good:bad odds, 20
points to double the odds) and grade.

The batch input has an ``uscc`` (or ``id``) column and a ``consent`` column
holding the path of each enterprise's consent file (relative to the CSV's
directory; empty if there is none), optionally the bank's own feature
columns. A row without a usable consent is written to the output as
``refused`` with the node's reason, never scored.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xinrong.errors import XinrongError
from xinrong.rpc.errors import RemoteError

if TYPE_CHECKING:
    from xinrong.bank.client import BankClient
    from xinrong.bank.modeling import ScoredEnterprise

OUTPUT_COLUMNS = ("uscc", "status", "probability", "score", "grade", "reason", "message", "consent_id")


def _connection(args: argparse.Namespace, model: dict[str, Any]) -> tuple[str, Path, str]:
    node = args.node or str(model.get("node", ""))
    creds = args.credentials or str(model.get("credentials", ""))
    if args.config:
        import tomllib

        doc = tomllib.loads(Path(args.config).read_text())
        table = doc.get("bank", {})
        node = args.node or table.get("node", node)
        if "credentials" in table and not args.credentials:
            creds = str(Path(args.config).parent / table["credentials"])
    if not node or not creds:
        raise ValueError("give --node and --credentials (or --config), or score with a model.json that names them")
    return node, Path(creds), str(model.get("node_id", "node"))


def _register(bank: BankClient, path: Path) -> str:
    from xinrong.consent import parse_consent, read_consent

    signed = read_consent(path)
    bank.register_consent(signed)  # idempotent: the node may already hold it
    return parse_consent(signed).consent_id


def cmd_score(args: argparse.Namespace) -> int:
    # numpy and the HE libraries load only for this verb, not for every `xinrong` command
    from xinrong.bank.client import BankClient
    from xinrong.bank.modeling import ModelingClient, bank_features_for, iter_csv, load_model, score_enterprises
    from xinrong.keys.layout import load_party

    model_dir = Path(args.model)
    model, share = load_model(model_dir)
    node, creds_dir, node_id = _connection(args, model)
    creds = load_party(creds_dir)
    if creds.party_id != share.party_id:
        raise ValueError(f"the model belongs to {share.party_id}, these credentials to {creds.party_id}")
    if bool(args.enterprise) == bool(args.input):
        raise ValueError("give either --enterprise (one enterprise) or --input/--output (a batch)")
    with (
        BankClient(node, creds, node_id=node_id, timeout=args.timeout) as bank,
        ModelingClient(node, creds, node_id=node_id, timeout=max(args.timeout, 60.0)) as client,
    ):
        if args.enterprise:
            consent_id = _register(bank, Path(args.consent)) if args.consent else ""
            x = bank_features_for(model, share, [args.enterprise])
            (result,) = score_enterprises(client, creds, model, share, [(args.enterprise, consent_id)], x)
            return _print_one(result, model, args.json)
        if not args.output:
            raise ValueError("--input needs --output")
        rows = list(iter_csv(Path(args.input)))
        if not rows:
            raise ValueError(f"{args.input} has no rows")
        key = "uscc" if "uscc" in rows[0] else "id"
        if key not in rows[0] or "consent" not in rows[0]:
            raise ValueError(f"{args.input} needs a 'uscc' (or 'id') column and a 'consent' column")
        base = Path(args.input).resolve().parent
        subjects: list[tuple[str, str]] = []
        for row in rows:
            cell = (row.get("consent") or "").strip()
            consent_id = _register(bank, base / cell) if cell else ""
            subjects.append((row[key].strip(), consent_id))
        by_id = {row[key].strip(): row for row in rows}
        x = bank_features_for(model, share, [u for u, _ in subjects], by_id)
        results = score_enterprises(client, creds, model, share, subjects, x)
    _write_batch(Path(args.output), results)
    scored = sum(r.scored for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        if not r.scored:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    detail = ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))
    print(
        f"scored {scored} of {len(results)} enterprises with model {model['job_id']}"
        f"{f'; refused: {detail}' if detail else ''}; wrote {args.output}"
    )
    return 0


def _print_one(result: ScoredEnterprise, model: dict[str, Any], as_json: bool) -> int:
    from xinrong.modeling.scoring import Scorecard

    card = Scorecard()
    if as_json:
        body = {**result.as_dict(), "model": model["job_id"], "scorecard": card.to_dict()}
        print(json.dumps(body, ensure_ascii=False))
        return 0 if result.scored else 1
    if not result.scored:
        print(f"xinrong bank score: refused: {result.reason}: {result.message}", file=sys.stderr)
        return 1
    print(
        f"{result.enterprise}: probability of default {result.probability:.4f}, score {result.score}, "
        f"grade {result.grade}   [model {model['job_id']}; {card.base_score:.0f} points at "
        f"{card.base_odds:.0f}:1, PDO {card.pdo:.0f}; consent {result.consent_id}]"
    )
    return 0


def _write_batch(path: Path, results: list[ScoredEnterprise]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(OUTPUT_COLUMNS)
        for r in results:
            writer.writerow(
                [
                    r.enterprise,
                    "scored" if r.scored else "refused",
                    "" if r.probability is None else f"{r.probability:.6f}",
                    "" if r.score is None else r.score,
                    r.grade or "",
                    r.reason,
                    r.message,
                    r.consent_id,
                ]
            )
    tmp.replace(path)


def run_score(args: argparse.Namespace) -> int:
    try:
        return cmd_score(args)
    except RemoteError as exc:
        print(f"xinrong bank score: refused: {exc}", file=sys.stderr)
        return 1
    except (XinrongError, OSError, ValueError) as exc:
        print(f"xinrong bank score: {exc}", file=sys.stderr)
        return 1


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model directory `xinrong model train` wrote")
    p.add_argument("--enterprise", help="USCC of one enterprise to score")
    p.add_argument("--consent", type=Path, help="that enterprise's signed consent file (purpose credit_scoring)")
    p.add_argument("--input", help="batch: CSV with uscc (or id) and consent (file path) columns")
    p.add_argument("--output", help="batch: where to write the scores (CSV)")
    p.add_argument("--json", action="store_true", help="one JSON object per enterprise")
