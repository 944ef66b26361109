"""What a newcomer does first works: the demo's work dir is safe, ``demo --keep``
leaves a network that the shipped job file trains against, and the README's
walk-through runs copy-paste, top to bottom."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xinrong.tools.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "x"
    mine.mkdir()
    (mine / "notes").write_text("hi")
    # Bad arguments are refused before anything is touched.
    assert main(["demo", "--workdir", str(mine), "--providers", "tax"]) == 2
    assert (mine / "notes").read_text() == "hi"
    # A folder with someone's files is refused even with good arguments.
    assert main(["demo", "--workdir", str(mine), "--enterprises", "10"]) == 2
    assert main(["demo", "--workdir", str(mine), "--providers", "tax,social_insurance,housing_fund,electricity"]) == 2
    err = capsys.readouterr().err
    assert "not made by xinrong demo" in err and "Traceback" not in err
    assert (mine / "notes").read_text() == "hi"


def test_demo_workdir_is_replaced_only_with_its_marker(tmp_path: Path) -> None:
    from xinrong.tools.demo import MARKER, prepare_workdir

    work = tmp_path / "demo-run"
    prepare_workdir(work)
    assert (work / MARKER).is_file()
    (work / "old-state").write_text("from the last run")
    prepare_workdir(work)
    assert not (work / "old-state").exists() and (work / MARKER).is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_keep_leaves_a_network_the_shipped_job_trains_against(tmp_path: Path) -> None:
    (tmp_path / "docs" / "examples").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "examples" / "job.toml", tmp_path / "docs" / "examples" / "job.toml")
    demo = subprocess.Popen(
        [sys.executable, "-m", "xinrong.tools.cli", "demo", "--keep", "--enterprises", "600", "--node-port", "0"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert "The network stays up" in text, text
        node = re.search(r"The network stays up \(node on (127\.0\.0\.1:\d+)", text)
        assert node is not None, text
        commands = [ln.strip() for ln in lines if ln.startswith("  xinrong ")]
        verify = next(c for c in commands if c.startswith("xinrong bank verify"))
        out = subprocess.run(verify, shell=True, cwd=tmp_path, env=_env(), capture_output=True, text=True, check=False)
        assert out.returncode == 0 and '"verdicts"' in out.stdout, out.stderr
        train = subprocess.run(
            ["xinrong", "model", "train", "--config", "docs/examples/job.toml", "--node", node.group(1), "--json"],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert train.returncode == 0, train.stdout + train.stderr
        assert '"auc"' in train.stdout
        assert (tmp_path / "demo-run" / "models" / "sme-default-2026q3" / "model_card.md").is_file()
        # Every README section after the walk-through runs as written against this network,
        # with what demo-run/env.sh sets (benchmarks aside: they stand up their own).
        for number, block in enumerate(_readme_sections_after_walkthrough()):
            script = "set -euo pipefail\nsource demo-run/env.sh\n" + block
            out = subprocess.run(
                ["bash", "-c", script],
                cwd=tmp_path,
                env=_env(),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert out.returncode == 0, f"README block {number}:\n{block}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    finally:
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, "".join(lines) + rest
    assert "stopping node and agents" in rest
    # Nothing the demo started is left: the node's port is closed.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(node.group(1).rsplit(":", 1)[1]))) != 0


def _readme_sections_after_walkthrough() -> list[str]:
    """The ```sh blocks from "Trying the rest" on, continuation lines joined, benchmarks left out."""
    text = (REPO / "README.md").read_text().split("### Trying the rest", 1)[1]
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)
    assert len(blocks) >= 8, "the README's later sections lost their ```sh blocks"
    kept = []
    for block in blocks:
        lines = [ln for ln in block.replace("\\\n", " ").splitlines() if not ln.startswith("xinrong bench ")]
        if any(ln.strip() and not ln.lstrip().startswith("#") for ln in lines):
            kept.append("\n".join(lines) + "\n")
    return kept


def _readme_walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## CLI walk-through", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert match is not None, "the README's walk-through has no ```sh block"
    return match.group(1)


@pytest.mark.e2e
@pytest.mark.slow
def test_readme_walkthrough_runs_copy_paste(tmp_path: Path) -> None:
    """The README's shell block, unedited, in a fresh folder (free ports through its own variables)."""
    script = "set -euo pipefail\n" + _readme_walkthrough()
    env = _env()
    env.update(NODE_PORT=str(_free_port()), TAX_PORT=str(_free_port()), SI_PORT=str(_free_port()), XINRONG_DATA_DIR="")
    out = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        start_new_session=True,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert '"verdicts"' in out.stdout and '"indicators"' in out.stdout
    assert "CONSENT_REVOKED" in out.stdout + out.stderr
    assert "audit chain OK" in out.stdout
