"""Configuration and data plumbing of joint modeling over the wire: the agent's ``[modeling]`` table,
the node's modeling keys, the bank's job file, and the features an agent derives from its own store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xinrong import uscc
from xinrong.bank.modeling import parse_job, read_bank_table
from xinrong.catalog import Catalog
from xinrong.errors import ValidationError, XinrongError
from xinrong.keys.layout import party_dir
from xinrong.modeling.scoring import scoring_key_statement
from xinrong.node.config import ConfigError, parse_config
from xinrong.provider_agent import config as agent_config
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.modeling_data import FeatureSource, load_csv, load_store
from xinrong.provider_agent.store import DataStore

A = uscc.make("9", "1", "130100", "MA0MKDL1")
B = uscc.make("9", "1", "130200", "MA0MKDL2")


def _agent_doc(root: Path, **modeling: Any) -> dict[str, Any]:
    return {
        "agent": {
            "provider": "tax",
            "bind": "127.0.0.1:0",
            "credentials": str(party_dir(root, "provider", "tax")),
            "ca_cert": str(root / "ca" / "ca.crt"),
            "db": str(root / "tax.db"),
        },
        **({"modeling": modeling} if modeling else {}),
    }


def test_agent_modeling_table(pki: Any, tmp_path: Path) -> None:
    cfg = agent_config.parse_config(_agent_doc(pki.root), tmp_path)
    assert not cfg.modeling.enabled and cfg.modeling.allowed_institutions == ()  # off unless configured
    dataset = tmp_path / "f.csv"
    dataset.write_text("id,x\n1,2\n")
    cfg = agent_config.parse_config(
        _agent_doc(pki.root, enabled=True, allowed_institutions=["bank-a"], dataset="f.csv", dir="m"), tmp_path
    )
    assert cfg.modeling.enabled and cfg.modeling.allowed_institutions == ("bank-a",)
    assert cfg.modeling.dataset == dataset and cfg.modeling.dir == tmp_path / "m"
    assert not cfg.modeling.allow_insecure
    bad_tables: list[tuple[dict[str, Any], str]] = [
        ({"enabeld": True}, "unknown keys"),
        ({"enabled": "yes"}, "true or false"),
        ({"allowed_institutions": "bank-a"}, "list"),
        ({"allowed_institutions": ["bank a"]}, "allowed_institutions"),
        ({"dataset": "missing.csv"}, "does not exist"),
    ]
    for bad, message in bad_tables:
        with pytest.raises(ValidationError, match=message):
            agent_config.parse_config(_agent_doc(pki.root, **bad), tmp_path)


def test_node_modeling_keys(pki: Any, tmp_path: Path) -> None:
    node = {
        "bind": "127.0.0.1:0",
        "credentials": str(party_dir(pki.root, "node", "node")),
        "ca_cert": str(pki.root / "ca" / "ca.crt"),
        "db": str(tmp_path / "node.db"),
    }
    cfg = parse_config({"node": node}, tmp_path)
    assert (cfg.modeling_step_timeout_seconds, cfg.modeling_allow_insecure, cfg.modeling_max_jobs) == (300.0, False, 4)
    cfg = parse_config(
        {
            "node": {
                **node,
                "modeling_step_timeout_seconds": 30,
                "modeling_allow_insecure": True,
                "modeling_max_jobs": 1,
            }
        },
        tmp_path,
    )
    assert (cfg.modeling_step_timeout_seconds, cfg.modeling_allow_insecure, cfg.modeling_max_jobs) == (30.0, True, 1)
    with pytest.raises(ConfigError, match="true or false"):
        parse_config({"node": {**node, "modeling_allow_insecure": 1}}, tmp_path)
    with pytest.raises(ConfigError, match=">= 1"):
        parse_config({"node": {**node, "modeling_max_jobs": 0}}, tmp_path)


def _job(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "job": {"id": "j", "node": "127.0.0.1:1", "credentials": "keys/bank", "providers": ["tax"]},
        "data": {"labels": "loans.csv", "label_column": "defaulted"},
        "train": {"epochs": 3},
    }
    for table, values in over.items():
        doc.setdefault(table, {}).update(values)
    return doc


def test_job_file(tmp_path: Path) -> None:
    job = parse_job(_job(he={"poly_modulus_degree": 16384}), tmp_path)
    assert job.backend == "ckks" and job.train.epochs == 3 and job.train.job_id == "j"
    assert job.labels == tmp_path / "loans.csv" and job.output == tmp_path / "models" / "j"
    assert job.he_params == {"poly_modulus_degree": 16384}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"job": {"backend": "plain"}}, "allow_plain"),
        ({"job": {"backend": "rsa"}}, "backend"),
        ({"train": {"epochz": 3}}, "unknown keys"),
        ({"train": {"learning_rate": -1.0}}, "learning_rate"),
        ({"job": {"id": "../etc"}}, "job id|id"),
        ({"job": {"providers": []}}, "providers"),
        ({"data": {"test_fraction": 1.5}}, "test_fraction"),
    ]
    for over, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_job(_job(**over), tmp_path)
    assert parse_job(_job(job={"backend": "plain", "allow_plain": True}), tmp_path).backend == "plain"


def test_bank_table(tmp_path: Path) -> None:
    path = tmp_path / "loans.csv"
    path.write_text(f"uscc,defaulted,amount,term\n{A},1,100,\n{B},0,NA,12\n")
    table = read_bank_table(path, party_id="bank-a", label_column="defaulted")
    assert table.ids == (A, B) and table.columns == ("amount", "term")
    assert table.y is not None and table.y.tolist() == [1.0, 0.0]
    assert np.isnan(table.x[0, 1]) and np.isnan(table.x[1, 0]) and table.x[1, 1] == 12
    path.write_text(f"uscc,defaulted\n{A},2\n")
    with pytest.raises(ValueError, match="0 or 1"):
        read_bank_table(path, party_id="bank-a", label_column="defaulted")


def test_store_features_follow_the_catalog(tmp_path: Path, catalog: Catalog) -> None:
    csv_path = tmp_path / "tax.csv"
    csv_path.write_text(
        "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
        "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
        f"{A},2026-06-30,B,false,true,51234.11,734512.37,,27,2026-06-15,false\n"
        f"{B},2026-06-30,,true,false,0,0,5.5,0,,\n"
    )
    store = DataStore(tmp_path / "tax.db", "tax")
    try:
        with pytest.raises(XinrongError, match="no active period"):
            load_store(tmp_path / "tax.db", catalog, "tax")
        import_csv(store, catalog, "tax", csv_path)
    finally:
        store.close()
    table = load_store(tmp_path / "tax.db", catalog, "tax")
    assert table.ids == tuple(sorted((A, B)))
    assert "tax.last_normal_payment_date" not in table.columns  # dates are skipped
    row = dict(zip(table.columns, table.x[table.index[A]]))
    grades = catalog.field("tax.credit_grade").values
    assert row["tax.credit_grade"] == grades.index("B")  # enum: catalog order
    assert (row["tax.abnormal_taxpayer"], row["tax.in_arrears"]) == (0.0, 1.0)  # bool: 0/1
    assert row["tax.vat_paid_last_year"] == 734512.37 and row["tax.consecutive_normal_months"] == 27
    assert np.isnan(row["tax.cit_paid_last_year"])  # blank: a gap, imputed by the party itself
    assert np.isnan(dict(zip(table.columns, table.x[table.index[B]]))["tax.credit_grade"])
    # an enterprise the provider does not hold is a row of gaps
    assert np.isnan(table.rows_of([uscc.make("9", "1", "130300", "MA0MKDL3")])).all()
    source = FeatureSource(dataset=None, db=tmp_path / "tax.db", catalog=catalog, provider="tax")
    assert source.load() is source.load() and not source.ready()  # cached per period; no dataset file


def test_dataset_features_and_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("id,x0,x1\na,1.5,\nb,2,3\n")
    first = load_csv(path)
    assert first.columns == ("x0", "x1") and np.isnan(first.x[0, 1])
    path.write_text("id,x0,x1\na,1.5,\nb,2,4\n")
    assert load_csv(path).fingerprint != first.fingerprint  # a changed dataset cannot resume a job


def test_scoring_key_statement_binds_job_request_and_key() -> None:
    base = scoring_key_statement("j", "r", "ckks", b"key")
    assert base != scoring_key_statement("j2", "r", "ckks", b"key")
    assert base != scoring_key_statement("j", "r2", "ckks", b"key")
    assert base != scoring_key_statement("j", "r", "ckks", b"other key")
