"""Realign Bench harness: checkpoint I/O, generation, experiment planning and the `realign` CLI.

Subpackages are imported explicitly (``harness.core.checkpoints``, ``harness.generate`` ...) so that
importing ``harness`` stays cheap and free of import cycles with ``realign_methods``/``benchmarks``.
"""

__all__: list[str] = []
