"""A whole joint-modeling job in one process: PSI, split, training, private scoring of the test rows.

For tests, trials and the in-process benchmark (``xinrong bench train
--inprocess``). Alignment uses the ECDH-PSI (``xinrong.modeling.psi``), relayed
and counted through the node as on the wire; ``align="ids"`` is a test-only
shortcut that joins on plain ids. The split and training order are the
bank's (``xinrong.modeling.vlr.split``), training is the simulator
(``xinrong.tools.federation.LocalFederation``), and the held-out rows are
scored with the private scoring protocol (``xinrong.modeling.scoring``) under
a key of the bank's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from xinrong.modeling import scoring
from xinrong.modeling.data import PartyTable, align_by_id_for_tests
from xinrong.modeling.he.base import keygen, load_public
from xinrong.modeling.vlr.bank import BankMetrics, BankParty
from xinrong.modeling.vlr.config import TrainConfig
from xinrong.modeling.vlr.provider import ProviderParty
from xinrong.modeling.vlr.split import aligned_features, aligned_labels, split_rows
from xinrong.modeling.vlr_state import ModelShare
from xinrong.tools.federation import NODE, LocalFederation, Traffic, TrainResult

FloatArray = npt.NDArray[np.float64]


# -- alignment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Rows common to the bank and all providers, in one order every party shares."""

    ids: tuple[str, ...]  # the bank's view: the id of every aligned row (decoys included)
    bank_rows: npt.NDArray[np.int64]  # row in the bank's table, -1 for a decoy
    provider_rows: dict[str, npt.NDArray[np.int64]]
    is_decoy: npt.NDArray[np.bool_]
    seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per party, its PSI workers included

    def __len__(self) -> int:
        return int(self.bank_rows.size)


def align_psi(
    bank: PartyTable,
    providers: Sequence[PartyTable],
    *,
    job_id: str,
    traffic: Traffic,
    decoys: Sequence[str] = (),
    workers: int | None = None,
) -> Alignment:
    """ECDH-PSI between the bank and each provider, relayed (and counted) through the node.

    The parties work as they would in their own processes: every provider
    blinds its own ids at once (``ProviderPsi.prepare``, concurrently with
    the bank's request) and answers the request on its own thread; the bank
    accepts responses as they arrive. X25519 holds the GIL, so the blinding
    itself runs in one pool of worker processes shared by all parties of
    this process (``psi.worker_pool``; ``workers=1``: none, all in this
    thread). ``Alignment.cpu_seconds`` is each party's CPU, its workers
    included: what it would spend in a process of its own.
    """
    from xinrong.modeling import psi

    t0 = time.perf_counter()
    context = f"xinrong/vlr/{job_id}".encode()
    work = len(bank.ids) + len(decoys) + sum(len(bank.ids) + 2 * len(p.ids) for p in providers)
    n_workers = psi.worker_count(workers)
    pool = psi.worker_pool(n_workers) if n_workers > 1 and work >= psi.PARALLEL_MIN else None
    try:
        bank_psi = psi.BankPsi(bank.ids, context=context, decoys=decoys, workers=n_workers, executor=pool)
        provider_psis = {
            p.name: psi.ProviderPsi(p.ids, context=context, workers=n_workers, executor=pool) for p in providers
        }
        with ThreadPoolExecutor(max_workers=len(providers), thread_name_prefix="psi-provider") as threads:
            for pp in provider_psis.values():
                threads.submit(pp.prepare)  # their own ids, while the bank blinds its request
            request = bank_psi.request()
            traffic.transfer(bank.name, NODE, "PsiRequest", request)
            responses = {}
            for p in providers:
                traffic.transfer(NODE, p.name, "PsiRequest", request)
                responses[p.name] = threads.submit(provider_psis[p.name].respond, request)
            for p in providers:
                response = responses[p.name].result()
                traffic.transfer(p.name, NODE, "PsiResponse", response)
                traffic.transfer(NODE, bank.name, "PsiResponse", response)
                bank_psi.accept(p.name, response)
        alignment, selections = bank_psi.finish()
        provider_rows = {}
        for p in providers:
            sel = selections[p.name]
            traffic.transfer(bank.name, NODE, "PsiSelection", sel)
            traffic.transfer(NODE, p.name, "PsiSelection", sel)
            provider_rows[p.name] = provider_psis[p.name].finish(sel).provider_index
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return Alignment(
        ids=tuple(alignment.ids),
        bank_rows=alignment.bank_index,
        provider_rows=provider_rows,
        is_decoy=np.asarray(alignment.is_decoy, dtype=bool),
        seconds=time.perf_counter() - t0,
        cpu_seconds={bank.name: bank_psi.cpu_seconds, **{n: pp.cpu_seconds for n, pp in provider_psis.items()}},
    )


def align_ids_for_tests(bank: PartyTable, providers: Sequence[PartyTable]) -> Alignment:
    """TEST-ONLY: join on plain ids (see ``xinrong.modeling.data.align_by_id_for_tests``)."""
    t0 = time.perf_counter()
    bank_rows, rows = align_by_id_for_tests(bank, providers)
    return Alignment(
        ids=tuple(bank.ids[i] for i in bank_rows),
        bank_rows=bank_rows,
        provider_rows={p.name: r for p, r in zip(providers, rows)},
        is_decoy=np.zeros(bank_rows.size, dtype=bool),
        seconds=time.perf_counter() - t0,
    )


# -- end to end: align, split, train, score ---------------------------------------------------


@dataclass
class JobResult:
    train: TrainResult
    alignment: Alignment
    train_rows: npt.NDArray[np.int64]  # positions in the aligned order
    test_rows: npt.NDArray[np.int64]
    y_train: FloatArray
    y_test: FloatArray
    test_logits: FloatArray  # from private scoring
    seconds_total: float  # alignment + keys + training, to the finished model
    seconds_keygen: float
    seconds_scoring: float
    scoring_traffic: Traffic


def run_job(
    bank: PartyTable,
    providers: Sequence[PartyTable],
    config: TrainConfig,
    *,
    backend: str,
    he_params: dict[str, Any] | None = None,
    workdir: str | Path,
    align: Literal["psi", "ids"] = "psi",
    decoys: Sequence[str] = (),
    test_fraction: float = 0.3,
    split_seed: int = 0,
    parallel: bool = False,
    capture: bool = False,
    progress: Callable[[int, BankMetrics], None] | None = None,
    psi_workers: int | None = None,
) -> JobResult:
    """The whole job in one process: PSI, 70/30 stratified split, training, private scoring of the test rows."""
    if bank.y is None:
        raise ValueError("the bank's table needs labels")
    names = [bank.name] + [p.name for p in providers]
    if len(set(names)) != len(names):
        raise ValueError("party names must be distinct")
    workdir = Path(workdir)
    t_start = time.perf_counter()
    traffic = Traffic(capture=capture)
    if align == "psi":
        alignment = align_psi(
            bank, providers, job_id=config.job_id, traffic=traffic, decoys=decoys, workers=psi_workers
        )
    else:
        if decoys:
            raise ValueError("decoys need the PSI")
        alignment = align_ids_for_tests(bank, providers)
    n = len(alignment)
    if n == 0:
        raise ValueError("the parties have no rows in common")
    y_aligned = aligned_labels(bank.y, alignment.bank_rows, alignment.is_decoy)
    split = split_rows(
        alignment.ids,
        alignment.bank_rows,
        alignment.is_decoy,
        y_aligned,
        job_id=config.job_id,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )
    train_rows, test_rows = split.train_rows, split.test_rows
    x_bank = aligned_features(bank.x, alignment.bank_rows, alignment.is_decoy)

    tk = time.perf_counter()
    secret = keygen(backend, **(he_params or {}))
    seconds_keygen = time.perf_counter() - tk

    bank_party = BankParty(
        bank.name,
        config,
        x_bank[train_rows],
        bank.columns,
        y_aligned[train_rows],
        decoy=alignment.is_decoy[train_rows],
        checkpoint_dir=workdir / "checkpoints" / bank.name,
    )
    provider_parties = [
        ProviderParty(
            p.name,
            p.x[alignment.provider_rows[p.name]],
            p.columns,
            checkpoint_dir=workdir / "checkpoints" / p.name,
        )
        for p in providers
    ]
    fed = LocalFederation(bank_party, provider_parties, secret, workdir=workdir, parallel=parallel, traffic=traffic)
    fed.start(n, train_rows)
    result = fed.run(progress=progress)
    seconds_total = time.perf_counter() - t_start

    ts = time.perf_counter()
    scoring_traffic = Traffic(capture=capture)
    logits = score_rows(
        result.bank_share,
        x_bank[test_rows],
        {p.name: (result.provider_shares[p.name], p.x[alignment.provider_rows[p.name][test_rows]]) for p in providers},
        request_id=f"{config.job_id}-test",
        traffic=scoring_traffic,
    )
    return JobResult(
        train=result,
        alignment=alignment,
        train_rows=train_rows,
        test_rows=test_rows,
        y_train=y_aligned[train_rows],
        y_test=y_aligned[test_rows],
        test_logits=logits,
        seconds_total=seconds_total,
        seconds_keygen=seconds_keygen,
        seconds_scoring=time.perf_counter() - ts,
        scoring_traffic=scoring_traffic,
    )


def score_rows(
    bank_share: ModelShare,
    bank_x_raw: npt.ArrayLike,
    providers: dict[str, tuple[ModelShare, npt.ArrayLike]],
    *,
    request_id: str,
    traffic: Traffic,
    scheme: str = "ckks",
) -> FloatArray:
    """Private scoring of aligned rows: providers encrypt under the bank's key, the node adds, the bank decrypts."""
    secret = scoring.bank_keygen(scheme)
    public_bytes = scoring.bank_public_bytes(secret)
    payloads = []
    for pid, (share, x_raw) in providers.items():
        traffic.transfer(bank_share.party_id, NODE, "ScoringKey", public_bytes)
        traffic.transfer(NODE, pid, "ScoringKey", public_bytes)
        public = load_public(scheme, public_bytes)
        features = share.transform.apply(x_raw)
        payload = scoring.provider_encrypt(public, request_id, pid, features, np.asarray(share.weights))
        traffic.transfer(pid, NODE, "PartialScores", payload)
        payloads.append(payload)
    node_public = load_public(scheme, public_bytes)
    total = scoring.aggregate(node_public, payloads, min_providers=len(providers))
    traffic.transfer(NODE, bank_share.party_id, "AggregateScores", total)
    bx = np.asarray(bank_x_raw, dtype=np.float64)
    own = bank_share.transform.apply(bx) @ np.asarray(bank_share.weights) if bank_share.weights else None
    batch = scoring.bank_score(
        secret,
        total,
        request_id=request_id,
        expected_providers=list(providers),
        bank_partial=own,
        intercept=float(bank_share.intercept or 0.0),
    )
    out: FloatArray = np.asarray(batch.logit, dtype=np.float64)
    if not np.all(np.isfinite(out)) or math.isnan(float(out.sum())):
        raise ValueError("scoring produced non-finite logits")
    return out
