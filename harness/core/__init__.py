"""The foundation layer of ``harness``: errors, hashing, paths, records, the registry, strict YAML and
checkpoints (read, write, LoRA, GGUF).

It imports nothing from the rest of the project; everything else (cli, experiment, generate, zoo,
demo, and the ``benchmarks``/``realign_methods``/``leaderboards`` packages) imports it downward.
"""
