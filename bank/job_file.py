"""The bank's ``job.toml``: one training job, validated when it is read.

Tables ``[job]`` (id, node, credentials, providers, backend, output),
``[data]`` (the label CSV and its columns, split, decoys), ``[train]``
(``xinrong.modeling.vlr.config.TrainConfig`` fields) and ``[he]`` (backend
parameters, checked by the node). It is read by the one loader every party
uses (``xinrong.config``): unknown tables and keys are refused with the
nearest valid name, values are strictly typed, relative paths resolve
against the file's directory.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any

import pydantic
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from xinrong.config import ConfigError, ConfigPath, Section, parse_file, read_toml, unknown_keys
from xinrong.modeling.vlr.config import TrainConfig
from xinrong.modeling.vlr_state import check_id

BACKENDS = ("ckks", "paillier", "plain")

_TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "job_id"]
_HINTS = typing.get_type_hints(TrainConfig)
# [train] checked as strictly as every other table: TrainConfig's own fields,
# types and defaults, no second list of them to keep in step.
_TRAIN_TABLE = pydantic.create_model(
    "TrainTable",
    __config__=pydantic.ConfigDict(strict=True, extra="forbid"),
    **typing.cast(
        dict[str, Any],
        {f.name: (_HINTS[f.name], f.default) for f in dataclasses.fields(TrainConfig) if f.name != "job_id"},
    ),
)


def _array(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _job_id(value: str) -> str:
    return check_id(value, "[job] id")


def _backend(value: str) -> str:
    if value not in BACKENDS:
        raise ValueError(f"must be one of {BACKENDS}")
    return value


def _providers(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must be a non-empty list of provider ids")
    return value


class JobFile(Section):
    """A validated ``job.toml``."""

    MAIN = ("job", "data")
    DERIVED = frozenset({"source"})
    TABLES = frozenset({"train", "he"})

    # [job]
    job_id: Annotated[str, AfterValidator(_job_id)] = Field(alias="id")
    node: str
    credentials: ConfigPath
    providers: Annotated[tuple[str, ...], BeforeValidator(_array), AfterValidator(_providers)]
    backend: Annotated[str, AfterValidator(_backend)] = "ckks"
    output: ConfigPath  # default models/<id> beside the file
    node_id: str = "node"
    allow_plain: bool = False
    timeout_seconds: float = Field(600.0, gt=0)
    # [data]
    labels: ConfigPath
    id_column: str = ""  # "" = "id" if the file has one, else "uscc"
    label_column: str = "y"
    features: Annotated[tuple[str, ...], BeforeValidator(_array)] | None = None  # None = every other column
    test_fraction: float = Field(0.3, gt=0, lt=1)
    split_seed: int = 0
    decoys: ConfigPath | None = None
    # [train], [he]
    train: TrainConfig
    he_params: dict[str, Any] = Field(default_factory=dict, alias="he")
    source: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: Any) -> Any:
        """[train] becomes the job's TrainConfig (its id is [job] id); output defaults to models/<id>."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        job_id = data.get("id", data.get("job_id"))
        if isinstance(job_id, str) and "output" not in data:
            data["output"] = f"models/{job_id}"
        table = data.get("train", {})
        if isinstance(table, dict):
            stray = [key for key in table if key not in _TRAIN_KEYS]
            if stray:
                raise ValueError(unknown_keys("[train]", stray, _TRAIN_KEYS))
            try:
                checked = _TRAIN_TABLE.model_validate(table)
            except pydantic.ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"[train].{where}: {first['msg']}") from None
            data["train"] = TrainConfig(job_id=str(job_id or ""), **checked.model_dump())
        return data

    @model_validator(mode="after")
    def _consistent(self) -> JobFile:
        try:
            self.train.validate()
        except ValueError as exc:
            raise ValueError(f"[train]: {exc}") from None
        if self.backend == "plain" and not self.allow_plain:
            raise ValueError(
                "backend 'plain' sends partial logits unencrypted to the bank: it is for tests only "
                "(set allow_plain = true in [job] to use it)"
            )
        return self


def parse_job(doc: dict[str, Any], base: Path, *, source: Path | None = None) -> JobFile:
    return parse_file(JobFile, doc, base=base, derived={"source": source}, what=str(source or "job file"))


def load_job(path: str | Path) -> JobFile:
    doc, resolved = read_toml(path, what="job file")
    return parse_job(doc, resolved.parent, source=resolved)


__all__ = ["BACKENDS", "ConfigError", "JobFile", "load_job", "parse_job"]
