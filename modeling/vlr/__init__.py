"""Coordinated vertical federated logistic regression (Hardy et al. 2017; FATE's coordinated LR).

Parties and what each holds
---------------------------
* **bank** (``BankParty``): the labels, optionally its own feature columns,
  the intercept; it drives the job.
* **providers** (``ProviderParty``, N >= 1): feature columns.
* **node** (``NodeCoordinator``): the job's HE secret key. It decrypts only
  payloads that their senders masked with fresh randomness (a party's
  gradient sums, the bank's aggregate loss) and relays everything else.

Topology is hub and spoke, as on the wire: the bank calls the node, the node
calls providers (``ProviderLink``), and every exchange runs bank -> node ->
providers -> node -> bank. Every method here takes and returns frozen
dataclasses of bytes and numbers (``xinrong.modeling.vlr_wire`` encodes them), so
the gRPC layer calls the same methods from separate processes.

Sealing. Providers' encrypted partial logits go to the bank, and the bank's
encrypted residual to each provider, *sealed end to end* (HPKE,
``xinrong.keys.sealing``): they are encrypted under the node's HE key, so the node
must not see them. The protocol code seals and opens (``sealing.Sealer``,
``SEALED_*`` content types and ``seal_context``); the node only ever handles
the sealed bytes, and checks their addressing before it relays them.

Modules
-------
* ``config``: ``TrainConfig`` and the batches every party derives from it;
* ``messages``: every message, the sealed content types and contexts;
* ``errors``: ``VlrError``, ``LogitGuardError``, ``ProtocolViolation``;
* ``party``: what bank and providers share (optimizer, position, checkpoints);
* ``bank``, ``provider``, ``node``: one module per role;
* ``guard``: the logit guard the node runs;
* ``sealing``: the ``Sealer`` interface, HPKE sealing, the node's relay check;
* ``driver``: ``BankDriver``, the one driver of a job, written against
  ``NodeTransport`` and ``Sealer``: the bank's process runs it over gRPC
  (``xinrong.bank``), the simulator in memory (``xinrong.tools.federation``);
* ``split``: the train/test split and training order of the aligned rows.

One mini-batch
--------------
All parties derive the same batches from the job seed (``batch_rows``); no
row list travels per batch, and a bank cannot pick adaptive batches.
Encrypted values are in normalized units ``t = z / R`` (``xinrong.modeling.sigmoid``).

1. *Bound (the logit guard).* Each party computes its partial logit at the
   Nesterov look-ahead weights, ``tau_i = X_i w_i / R`` (R = the base
   ``sigmoid_radius``; the bank adds its intercept), and sends the node an
   integer code of an upper bound on ``max |tau_i|`` over the batch
   (quarter-octave resolution, ``xinrong.modeling.sigmoid.bound_code``). The sum S of
   the bounds bounds every logit of the batch: ``|z| <= S * R``. The node
   picks the smallest *level* k with ``S <= 2**(k/4)`` and the whole batch
   uses the sigmoid fitted on ``[-R_k, R_k]``, ``R_k = R * 2**(k/4)``: a
   wider approximant when logits grow (nearly separable data), the most
   accurate one (k = 0) otherwise. Beyond ``guard_max_level`` the node has
   every party multiply its weights and momentum by the common factor
   ``2**(-j/4)`` that brings S to ``guard_target`` of the widest interval;
   a factor below ``guard_min_factor`` (logits jumping 8x in one step:
   divergence) fails the job with ``LogitGuardError`` instead of hiding it.
   So no logit ever leaves the interval its sigmoid was fitted on, and
   every level change and shrink is recorded. *Leak, by design:* the node
   learns each party's coarse bound per batch (no row identities); the bank
   learns the level and shrink steps, i.e. a quarter-octave bound on the
   batch's largest logit once it exceeds R. After training, scoring reveals
   logits to the bank anyway.
2. *Forward.* Each provider encrypts ``tau_i`` under the node's key,
   rerandomizes, and seals it to the bank. The bank forms
   ``[[t]] = sum [[tau_i]] + tau_b``, evaluates the sigmoid polynomial with
   row weights on its coefficients (0 for decoys, ``B / B_real`` for real
   rows, skipped when the batch has no decoys; no level of their own) and
   subtracts the weighted labels: ``[[d]] = w * (s([[t]]) - y)``. Each
   provider gets its own rerandomization of ``[[d]]`` (a fresh Enc(0) at
   ``[[d]]``'s level), sealed to it. One shared rerandomization would hide
   ``[[d]]`` from each provider just as well (the fresh randomness is the
   bank's alone) and would only matter if providers colluded, which the
   trust model excludes; we keep one per provider anyway, because "every
   ciphertext that leaves a party carries randomness never sent before" is
   a rule the backends and tests can check locally, and it costs ~11 ms.
3. *Gradients.* Every party computes ``masked_column_sums([[d]], X_i)``; the
   node decrypts the masked sums and returns them to that party only; the
   party unmasks, divides by B, adds ``l2 * w`` and updates its own weights.
   The node audits that each party submits exactly one payload of its own
   width per batch.
4. *Loss.* With a backend that can evaluate it, the bank computes the
   per-row loss polynomial on ``[[t]]`` (``s``'s antiderivative when the
   degree allows), masks the total and has the node decrypt it. With a
   degree-1 backend (Paillier) the bank sends provider j the encrypted
   prefix ``[[T_{j-1}]] = tau_b + sum_{i<j} [[tau_i]]`` with the residual and
   gets back ``[[2 tau_j T_{j-1} + tau_j**2]]``, sealed, from which it forms
   ``[[t**2]]`` for the quadratic loss; one extra bank -> node call.

What each party learns
----------------------
* Node: bound codes (a quarter-octave bound on each party's largest
  |partial logit| per batch, no row identities), the level and shrink it
  decides, masked sums it cannot unmask, sealed boxes it cannot open, and
  the bank's per-epoch aggregate loss (reported for the model metadata).
  Never a gradient, partial logit, residual, label or weight: replaying its
  view through the optimizer yields noise (``tests/test_vlr_privacy.py``).
* Bank: its own gradient each step and the aggregate loss (as in Hardy et
  al.), the per-batch interval level and shrink steps; partial logits only
  as ciphertexts under the node's key.
* Provider: its own gradient each step (as in Hardy et al.), the interval
  level and shrink steps of each batch (coarse, label-dependent bits), the
  training row set; labels only inside ``[[d]]`` under the node's key.
* Nobody: another party's weights or features. Weights never leave their
  owner; the node's model metadata holds names, hashes and metrics only.

Trust model: the node is honest-but-curious (it relays faithfully); HPKE
base mode seals for confidentiality, and sender authenticity comes from the
mTLS hop plus the node's relaying. A *malicious* node could feed a party
ciphertexts of its choosing; that breaks integrity, not the masking of what
the node decrypts. Like Hardy et al. and FATE, training assumes the bank and
providers follow the protocol: the node cannot check *what* a masked
payload was computed from, so a party that masks something else than its
own gradient can have one of its own linear functions of any ciphertext it
holds decrypted -- a malicious bank could read chosen rows of a partial
logit, a malicious provider chosen rows of the residual (hence labels).
The node's audit (one payload per party per batch, exactly that party's
width) bounds this to that many values per batch; closing it needs
zero-knowledge proofs of correct computation (or zero-sum masks among
providers plus noise), which neither this protocol nor its peers have. Decoy rows: real rows get weight ``B / B_real`` so the
gradient is a mean over real rows; ``bank.MAX_ROW_WEIGHT`` caps that at 4
(at least a quarter of a batch real), which keeps residuals within a few
times the CKKS masking bound ``value_bound``.

Backends: the protocol only asks ``max_degree`` of a key. Paillier
(``max_degree == 1``) gets FATE's first-order sigmoid, i.e. least squares;
CKKS evaluates degree 7 with its default chain (9 with one more level).
"""

from xinrong.modeling.vlr.bank import MAX_ROW_WEIGHT, BankBackward, BankMetrics, BankParty
from xinrong.modeling.vlr.config import PROTOCOL, Schedule, TrainConfig, batch_count, batch_rows, level_scale
from xinrong.modeling.vlr.driver import BankDriver, NodeTransport
from xinrong.modeling.vlr.errors import LogitGuardError, ProtocolViolation, VlrError
from xinrong.modeling.vlr.guard import GuardRecord, LogitGuard
from xinrong.modeling.vlr.messages import SEALED_PARTIAL, SEALED_RESIDUAL, SEALED_SQUARE, seal_context
from xinrong.modeling.vlr.node import NodeCoordinator, ProviderLink
from xinrong.modeling.vlr.provider import ProviderEndpoint, ProviderParty
from xinrong.modeling.vlr.sealing import HpkeSealer, Sealer

__all__ = [
    "MAX_ROW_WEIGHT",
    "PROTOCOL",
    "SEALED_PARTIAL",
    "SEALED_RESIDUAL",
    "SEALED_SQUARE",
    "BankBackward",
    "BankDriver",
    "BankMetrics",
    "BankParty",
    "GuardRecord",
    "HpkeSealer",
    "LogitGuard",
    "LogitGuardError",
    "NodeCoordinator",
    "NodeTransport",
    "ProtocolViolation",
    "ProviderEndpoint",
    "ProviderLink",
    "ProviderParty",
    "Schedule",
    "Sealer",
    "TrainConfig",
    "VlrError",
    "batch_count",
    "batch_rows",
    "level_scale",
    "seal_context",
]
