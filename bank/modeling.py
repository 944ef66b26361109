"""The institution's joint modeling: train a model with the node and providers, then score with it.

The pieces, one module each:

* ``job_file``: the ``job.toml`` (``JobFile``, ``load_job``, ``parse_job``);
* ``bank_table``: the bank's own data (labels and features; never sent);
* ``modeling_client``: the ``ModelingService`` connection and the protocol's
  transport over it (``ModelingClient``, ``GrpcNode``);
* ``training``: one job from PSI to the finished model (``train``,
  ``TrainOutcome``), driven by ``xinrong.modeling.vlr.driver.BankDriver``;
* ``job_state``: what ``--resume`` needs on the bank's disk;
* ``model_files``: the model card, plots, weights report and ``model.json``;
* ``scoring_client``: private scoring of held-out rows and of consented
  enterprises.

This module re-exports what the CLI verbs (``xinrong model``, ``xinrong bank
score``) and other callers use.
"""

from xinrong.bank.bank_table import bank_features_for, iter_csv, read_bank_table
from xinrong.bank.job_file import JobFile, load_job, parse_job
from xinrong.bank.job_state import JobState
from xinrong.bank.model_files import load_model
from xinrong.bank.modeling_client import ModelingClient
from xinrong.bank.scoring_client import ScoredEnterprise, score_enterprises, score_job_rows
from xinrong.bank.training import TrainOutcome, tqdm_progress, train

__all__ = [
    "JobFile",
    "JobState",
    "ModelingClient",
    "ScoredEnterprise",
    "TrainOutcome",
    "bank_features_for",
    "iter_csv",
    "load_job",
    "load_model",
    "parse_job",
    "read_bank_table",
    "score_enterprises",
    "score_job_rows",
    "tqdm_progress",
    "train",
]
