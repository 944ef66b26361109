"""Tools on top of the parties: the ``xinrong`` command, the demo, a local
network of real processes, benchmarks, synthetic data and the in-process
federation simulator. Nothing below this layer imports it."""
