"""``python -m xinrong.modeling.he.ckks``: the benchmark, one JSON line (as before the package split)."""

import json

from xinrong.modeling.he.ckks.bench import benchmark

if __name__ == "__main__":  # pragma: no cover - manual benchmark
    print(json.dumps(benchmark()))
