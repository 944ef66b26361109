"""The committed generated code must be exactly what proto/ generates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto_sources() -> None:
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_drift_check_detects_a_change(tmp_path: Path) -> None:
    """The check is not vacuous: editing a generated file makes it fail."""
    pytest.importorskip("grpc_tools")
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "proto", copy / "proto")
    shutil.copytree(ROOT / "xinrong" / "v1", copy / "xinrong" / "v1")
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    target = copy / "xinrong" / "v1" / "node_pb2.py"
    target.write_text(target.read_text() + "\n# drift\n")
    result = subprocess.run(
        [sys.executable, str(copy / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "node_pb2.py differs" in result.stderr


def test_proto_style_enums_start_unspecified() -> None:
    """AIP/buf style: every enum's zero value is <ENUM>_UNSPECIFIED."""
    from xinrong.v1 import agent_pb2, common_pb2, node_pb2

    for module in (common_pb2, node_pb2, agent_pb2):
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            zero = enum.values_by_number[0].name
            assert zero.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero}"
        assert module.DESCRIPTOR.package == "xinrong.v1"
