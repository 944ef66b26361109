"""Loan products with real processes: the demo step (``xinrong.tools.demo_match``) through the CLIs.

A bank publishes two products, enterprises grant matching consents, ``xinrong
node matching run``, each enterprise opens its own result (checked against
the CSVs), one applies with ``xinrong enterprise apply`` and ``xinrong bank
applications`` verifies its eligibility offline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong.catalog import default_catalog
from xinrong.node.config import load_config
from xinrong.tools.demo import GroundTruth
from xinrong.tools.demo_match import play_matching
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AS_OF = "2026-09-30"
PROVIDERS = ["tax", "social_insurance"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, GroundTruth]]:
    workdir = tmp_path_factory.mktemp("products-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=300, seed=11, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        plat = deploy(workdir, providers=PROVIDERS, institutions=["bank-a", "bank-b"], data_dir=data, group=group)
        yield plat, GroundTruth(data, default_catalog(), PROVIDERS)


def test_products_matching_and_apply_through_the_clis(platform: tuple[LocalPlatform, GroundTruth]) -> None:
    plat, truth = platform
    result = play_matching(plat, truth, AS_OF, enterprises=6)
    assert result["matches_total"] == 2 * 7
    assert result["matches_correct"] == result["matches_total"]
    assert result["applications"] == 1
    assert plat.node_config is not None
    db = load_config(plat.node_config).db
    assert db is not None
    conn = sqlite3.connect(f"file:{Path(db)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT length(total)) FROM match_sums").fetchone()
    finally:
        conn.close()
    assert rows == (14, 1)  # one sum per pair, every one a ciphertext of one width
