"""Issue 10, A15: FATE's benchmark shape is part of ``xinrong bench train`` (generated, fixed
seed), and a failed run ends in one line naming the party and step, not a traceback."""

from __future__ import annotations

import argparse

import grpc
import numpy as np
import pytest

from xinrong.rpc.errors import RemoteError
from xinrong.tools.bench import train


def test_fate_shape_is_deterministic_and_standardized() -> None:
    bank, host = train.fate_shape(rows=2000, guest_features=3, host_features=7, seed=5)
    again, host_again = train.fate_shape(rows=2000, guest_features=3, host_features=7, seed=5)
    assert np.array_equal(bank.x, again.x) and np.array_equal(host.x, host_again.x)
    assert bank.x.shape == (2000, 3) and host.x.shape == (2000, 7) and bank.ids == host.ids
    assert bank.y is not None and 0.2 < float(bank.y.mean()) < 0.8
    assert np.allclose(host.x.mean(axis=0), 0, atol=1e-3) and np.allclose(host.x.std(axis=0), 1, atol=1e-3)
    assert train.FATE_SHAPE == {"rows": 100_000, "guest_features": 30, "host_features": 300, "seed": 20_241}


def test_the_cli_offers_fate_shape_with_one_provider_and_fails_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--dataset", "fate_shape", "--epochs", "2", "--json"])
    seen: dict[str, object] = {}

    def failing(args: argparse.Namespace, dataset: str, providers: int, progress: object) -> dict[str, object]:
        seen.update(dataset=dataset, providers=providers)
        raise RemoteError(
            grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE", "provider tax did not answer at step OpenJob"
        )

    monkeypatch.setattr(train, "_run_from_args", failing)
    assert train.main(args) == 1
    assert seen == {"dataset": "fate_shape", "providers": 1}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "provider tax" in err
