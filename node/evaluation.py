"""The node's side of full-coverage evaluation: coordinate a period, store scores and grades.

A run (``xinrong node evaluate``), for one period:

1. the universe: the register provider's (market regulator's) USCC list
   of its active period, sorted; the register is public by law, so
   publishing it to every agent tells none of them anything new;
2. a fresh CKKS key pair for this run only (never written to disk);
3. round 1: every configured provider returns its presence vector,
   masked with pairwise zero-sum masks and encrypted; the node adds the
   ciphertexts, decrypts the sum, reduces it mod M and has the number of
   providers that know each enterprise (not which ones);
4. the eligible set: at least the index's ``min_providers``;
5. round 2: every provider returns its points, zero outside the eligible
   set, masked and encrypted; the node adds, decrypts, unmasks: the total
   of each eligible enterprise, of at least two providers' parts;
6. score (0..1000) and grade per enterprise, stored per period
   (``EvaluationStore``); the key is dropped.

The node can decrypt any single ciphertext it receives (it holds the key),
and what it would see is uniform noise mod M: the masks cancel only in the
sum of every participant. All providers must answer both rounds; a run
with one missing fails as a whole and is simply started again (new id,
new masks, new key).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from xinrong.errors import Reason, SignatureError, XinrongError
from xinrong.index import EvaluationIndex, default_index
from xinrong.keys.binding import verify_binding
from xinrong.keys.layout import PartyCredentials, read_binding_file
from xinrong.modeling import evaluation as ev
from xinrong.node.config import NodeConfig
from xinrong.node.modeling_links import AgentStepError, Observer
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.statefiles import check_private
from xinrong.v1 import common_pb2, evaluation_pb2, evaluation_pb2_grpc

log = logging.getLogger(__name__)

REGISTER_PROVIDER = "market"
USCC_BYTES = 18
NOT_SCORED = -1
_PERIOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


def check_period(period: str) -> str:
    if not _PERIOD.fullmatch(period):
        raise XinrongError(
            f"bad period {period!r}", reason=Reason.INVALID_ARGUMENT, public="period: 1-32 of A-Z a-z 0-9 . _ -"
        )
    return period


def default_period(now: float | None = None) -> str:
    return time.strftime("%Y-%m", time.gmtime(time.time() if now is None else now))


def grades_of(index: EvaluationIndex, scores: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The grade rank (0 = best) of each score, vectorised ``EvaluationIndex.grade``."""
    cuts = np.array([g.min_score for g in index.grades][::-1])
    out: npt.NDArray[np.int64] = (len(index.grades) - np.searchsorted(cuts, scores, side="right")).astype(np.int64)
    return np.clip(out, 0, len(index.grades) - 1)


def scores_of(index: EvaluationIndex, totals: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Vectorised ``EvaluationIndex.score``: round half to even like Python's round."""
    out: npt.NDArray[np.int64] = np.clip(np.rint(1000 * totals / index.max_total), 0, 1000).astype(np.int64)
    return out


@dataclass(frozen=True)
class EvaluationRecord:
    """One enterprise's stored result."""

    period: str
    evaluation_id: str
    index_version: str
    index_sha256: str
    evaluated_at: int
    scored: bool
    score: int
    grade: str


class EvaluationStore:
    """Per period: ``<period>.npz`` (universe, scores) and ``<period>.json`` (metadata), 0600.

    What is kept is what the node is entitled to: score and grade of each
    eligible enterprise (and, implicitly, which enterprises were withheld).
    Neither the presence counts nor any provider's part are written.
    """

    def __init__(self, directory: Path | None) -> None:
        """``directory`` None: a node without an evaluation directory (PostgreSQL, none configured) has no results."""
        self.directory = directory
        self._cache: dict[str, tuple[float, dict[str, Any], npt.NDArray[Any], npt.NDArray[np.int16]]] = {}

    def _paths(self, period: str) -> tuple[Path, Path]:
        check_period(period)
        if self.directory is None:
            raise XinrongError("no evaluation directory", reason=Reason.NOT_FOUND, public="no evaluation has been run")
        return self.directory / f"{period}.npz", self.directory / f"{period}.json"

    def save(self, meta: dict[str, Any], universe: npt.NDArray[Any], scores: npt.NDArray[np.int64]) -> None:
        data_path, meta_path = self._paths(str(meta["period"]))
        data_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for final, write in (
            (data_path, lambda f: np.savez(f, universe=universe, scores=scores.astype(np.int16))),
            (meta_path, lambda f: f.write(json.dumps(meta, sort_keys=True).encode())),
        ):
            tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, final)
        self._cache.pop(str(meta["period"]), None)

    def periods(self) -> list[str]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if _PERIOD.fullmatch(p.stem))

    def latest(self) -> str | None:
        """The period evaluated last (by evaluation time)."""
        best: tuple[int, str] | None = None
        for period in self.periods():
            meta = self.meta(period)
            key = (int(meta["evaluated_at"]), period)
            best = key if best is None or key > best else best
        return None if best is None else best[1]

    def meta(self, period: str) -> dict[str, Any]:
        _, meta_path = self._paths(period)
        out: dict[str, Any] = json.loads(meta_path.read_text())
        return out

    def _load(self, period: str) -> tuple[dict[str, Any], npt.NDArray[Any], npt.NDArray[np.int16]]:
        data_path, meta_path = self._paths(period)
        mtime = meta_path.stat().st_mtime
        cached = self._cache.get(period)
        if cached is None or cached[0] != mtime:
            check_private(data_path, "evaluation results")
            with np.load(data_path, allow_pickle=False) as z:
                universe, scores = z["universe"], z["scores"]
            cached = (mtime, self.meta(period), universe, scores)
            self._cache[period] = cached
        return cached[1], cached[2], cached[3]

    def lookup(self, uscc: str, period: str | None = None) -> EvaluationRecord | None:
        """The enterprise's result of a period (default: the latest); None when none was run."""
        chosen = period or self.latest()
        if chosen is None or not self._paths(chosen)[1].exists():
            return None
        meta, universe, scores = self._load(chosen)
        at = int(np.searchsorted(universe, uscc.encode()))
        found = at < universe.size and universe[at] == uscc.encode()
        score = int(scores[at]) if found else NOT_SCORED
        grades: list[str] = list(meta["grades"])
        cuts: list[int] = list(meta["grade_min_scores"])
        grade = next((g for g, c in zip(grades, cuts) if score >= c), grades[-1]) if score >= 0 else ""
        return EvaluationRecord(
            period=chosen,
            evaluation_id=str(meta["evaluation_id"]),
            index_version=str(meta["index_version"]),
            index_sha256=str(meta["index_sha256"]),
            evaluated_at=int(meta["evaluated_at"]),
            scored=score >= 0,
            score=max(score, 0),
            grade=grade,
        )


def _stub_call(
    stub: Any, method: str, request: Any, *, provider: str, timeout: float, observer: Observer | None
) -> Any:
    if observer is not None:
        observer(provider, "out", method, request.SerializeToString())
    try:
        response = getattr(stub, method)(request, timeout=timeout)
    except grpc.RpcError as err:
        raise AgentStepError(provider, method, decode_rpc_error(err)) from None
    if observer is not None:
        observer(provider, "in", method, response.SerializeToString())
    return response


class EvaluationAgents:
    """One mTLS channel per configured agent for evaluation traffic, and the agents' CA-checked bindings."""

    def __init__(self, config: NodeConfig, credentials: PartyCredentials, *, strict: bool = True) -> None:
        """``strict``: a binding that does not verify for its provider fails (a run); else it is skipped (serving)."""
        self._channels: dict[str, grpc.Channel] = {}
        self.stubs: dict[str, Any] = {}
        self.bindings: dict[str, common_pb2.SignedPartyBinding] = {}
        for endpoint in config.providers:
            signed = read_binding_file(endpoint.binding)
            try:
                verified = verify_binding(credentials.ca, signed, expect_role="provider")
                if verified.provider != endpoint.name:
                    raise SignatureError(f"binding is for provider {verified.provider!r}")
            except SignatureError as exc:
                if strict:
                    raise XinrongError(
                        f"[[providers]] {endpoint.name}: {exc}",
                        reason=Reason.FAILED_PRECONDITION,
                        public=f"the binding configured for {endpoint.name} does not verify for that provider",
                    ) from None
                log.warning("evaluation: skipping provider %s, its binding does not verify", endpoint.name)
                continue
            self.bindings[endpoint.name] = signed
            channel = secure_channel(endpoint.address, credentials, server_role="provider", server_id=endpoint.name)
            self._channels[endpoint.name] = channel
            self.stubs[endpoint.name] = evaluation_pb2_grpc.EvaluationAgentServiceStub(channel)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


@dataclass(frozen=True)
class EvaluationSummary:
    period: str
    evaluation_id: str
    enterprises: int
    evaluated: int
    withheld: int
    providers: tuple[str, ...]
    seconds: float
    phases: Mapping[str, float]
    grades: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "evaluation_id": self.evaluation_id,
            "enterprises": self.enterprises,
            "evaluated": self.evaluated,
            "withheld": self.withheld,
            "providers": list(self.providers),
            "seconds": round(self.seconds, 2),
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "grades": dict(self.grades),
        }


class EvaluationCoordinator:
    """Runs a period's evaluation over the configured agents and stores the results."""

    def __init__(
        self,
        agents: EvaluationAgents,
        store: EvaluationStore,
        *,
        index: EvaluationIndex | None = None,
        timeout: float = 600.0,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.time,
        keygen: Callable[[], Any] = ev.evaluation_keygen,
    ) -> None:
        self._keygen = keygen  # tests pass one that keeps the key, to decrypt what the node could
        self._agents = agents
        self._store = store
        self._index = index or default_index()
        self._timeout = timeout
        self._observer = observer
        self._clock = clock

    def _universe(self, evaluation_id: str) -> tuple[npt.NDArray[Any], bytes]:
        stub = self._agents.stubs.get(REGISTER_PROVIDER)
        if stub is None:
            raise XinrongError(
                "no register agent",
                reason=Reason.FAILED_PRECONDITION,
                public=f"evaluation needs the {REGISTER_PROVIDER} provider's register: configure its agent",
            )
        resp = _stub_call(
            stub,
            "GetEvaluationUniverse",
            evaluation_pb2.GetEvaluationUniverseRequest(evaluation_id=evaluation_id),
            provider=REGISTER_PROVIDER,
            timeout=self._timeout,
            observer=self._observer,
        )
        data = bytes(resp.usccs)
        if not data or len(data) % USCC_BYTES:
            raise XinrongError("register is empty or malformed", reason=Reason.FAILED_PRECONDITION)
        universe = np.frombuffer(data, dtype=f"S{USCC_BYTES}")
        if universe.size > 1 and not bool(np.all(universe[1:] > universe[:-1])):
            raise XinrongError("register is not sorted and distinct", reason=Reason.FAILED_PRECONDITION)
        return universe, data

    def _round(
        self,
        pool: ThreadPoolExecutor,
        base_request: evaluation_pb2.ComputeEvaluationPartRequest,
        round_: int,
        eligible: bytes,
    ) -> tuple[list[bytes], dict[str, str]]:
        request = evaluation_pb2.ComputeEvaluationPartRequest()
        request.CopyFrom(base_request)
        request.round = round_  # type: ignore[assignment]
        request.eligible = eligible
        futures = {
            name: pool.submit(
                _stub_call,
                stub,
                "ComputeEvaluationPart",
                request,
                provider=name,
                timeout=self._timeout,
                observer=self._observer,
            )
            for name, stub in self._agents.stubs.items()
        }
        payloads, as_of = [], {}
        for name, future in futures.items():
            resp = future.result()
            payloads.append(bytes(resp.payload))
            as_of[name] = resp.data_as_of
        return payloads, as_of

    def run(self, period: str) -> EvaluationSummary:
        check_period(period)
        names = tuple(sorted(self._agents.stubs))
        if len(names) < max(2, self._index.min_providers):
            raise XinrongError(
                "too few providers",
                reason=Reason.FAILED_PRECONDITION,
                public=f"evaluation needs at least {max(2, self._index.min_providers)} providers",
            )
        start = time.perf_counter()
        phases: dict[str, float] = {}
        evaluation_id = f"{period}.{secrets.token_hex(8)}"
        t = time.perf_counter()
        universe, packed = self._universe(evaluation_id)
        phases["universe"] = time.perf_counter() - t
        t = time.perf_counter()
        secret = self._keygen()
        public_raw = secret.public_bytes(with_relin_keys=False)
        public = secret  # the key holder adds with its own context
        phases["keygen"] = time.perf_counter() - t
        base_request = evaluation_pb2.ComputeEvaluationPartRequest(
            evaluation_id=evaluation_id,
            period=period,
            index_sha256=self._index.sha256,
            public_key=public_raw,
            universe=packed,
            universe_sha256=ev.universe_digest(universe),
            participants=[self._agents.bindings[n] for n in names],
        )
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="evaluation") as pool:
            t = time.perf_counter()
            parts, as_of = self._round(pool, base_request, evaluation_pb2.EVALUATION_ROUND_PRESENCE, b"")
            phases["presence_parts"] = time.perf_counter() - t
            t = time.perf_counter()
            counts = self._sum(public, secret, parts, ev.KIND_PRESENCE, names)
            mask = ev.eligible(counts, self._index.min_providers)
            del parts
            phases["presence_sum"] = time.perf_counter() - t
            t = time.perf_counter()
            parts, _ = self._round(pool, base_request, evaluation_pb2.EVALUATION_ROUND_POINTS, ev.pack_mask(mask))
            phases["points_parts"] = time.perf_counter() - t
        t = time.perf_counter()
        totals = self._sum(public, secret, parts, ev.KIND_POINTS, names)
        del parts, secret
        scores = np.where(mask, scores_of(self._index, totals), NOT_SCORED)
        ranks = grades_of(self._index, np.maximum(scores, 0))
        phases["points_sum_score"] = time.perf_counter() - t
        t = time.perf_counter()
        grade_names = [g.name for g in self._index.grades]
        histogram = {g: int(np.sum(mask & (ranks == i))) for i, g in enumerate(grade_names)}
        meta = {
            "period": period,
            "evaluation_id": evaluation_id,
            "index_version": self._index.version,
            "index_sha256": self._index.sha256,
            "evaluated_at": int(self._clock()),
            "enterprises": int(universe.size),
            "evaluated": int(mask.sum()),
            "providers": list(names),
            "data_as_of": as_of,
            "grades": grade_names,
            "grade_min_scores": [g.min_score for g in self._index.grades],
        }
        self._store.save(meta, universe, scores)
        phases["store"] = time.perf_counter() - t
        summary = EvaluationSummary(
            period=period,
            evaluation_id=evaluation_id,
            enterprises=int(universe.size),
            evaluated=int(mask.sum()),
            withheld=int(universe.size - mask.sum()),
            providers=names,
            seconds=time.perf_counter() - start,
            phases=phases,
            grades=histogram,
        )
        log.info(
            "evaluation %s: %d enterprises, %d evaluated, %d withheld, %.1f s",
            evaluation_id,
            summary.enterprises,
            summary.evaluated,
            summary.withheld,
            summary.seconds,
        )
        return summary

    @staticmethod
    def _sum(
        public: Any, secret: Any, parts: Sequence[bytes], kind: str, names: Sequence[str]
    ) -> npt.NDArray[np.int64]:
        """Add every participant's part and decrypt only that sum; the masks cancel mod M."""
        total = ev.aggregate_parts(public, parts, kind=kind, min_parts=len(names))
        sums = ev.decrypt_sums(secret, total)
        if sums.providers != tuple(sorted(names)):
            raise XinrongError("a part is missing or foreign", reason=Reason.JOB_FAILED)
        return ev.unmask(sums.values)


def run_evaluation(
    config: NodeConfig, credentials: PartyCredentials, period: str, *, observer: Observer | None = None
) -> EvaluationSummary:
    agents = EvaluationAgents(config, credentials)
    try:
        coordinator = EvaluationCoordinator(
            agents,
            EvaluationStore(config.evaluation_path()),
            timeout=config.evaluation_timeout_seconds,
            observer=observer,
        )
        return coordinator.run(period)
    finally:
        agents.close()


__all__ = [
    "EvaluationAgents",
    "EvaluationCoordinator",
    "EvaluationRecord",
    "EvaluationStore",
    "EvaluationSummary",
    "check_period",
    "default_period",
    "grades_of",
    "run_evaluation",
    "scores_of",
]
