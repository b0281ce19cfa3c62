"""Merge benchmark: our streaming TIES vs mergekit's TIES vs the pure-I/O floor, side by side.

Builds synthetic TinyLlama-shape checkpoints (hidden 2048, intermediate 5632, vocab 32000, 32/4
heads, bf16, sharded at 1 GB): a base and three fine-tunes (base + small noise). Default 22 layers
(≈2.2 GB per model); ``--layers N`` scales the depth down. Each contender runs in its own child
process, which reports its own peak RSS (VmHWM; it includes resident pages of memory-mapped input
files). Targets: our wall ≤ 0.8× mergekit's, our throughput ≥ 0.7× the I/O floor's, peak RSS ≤ 2 GB.

mergekit runs from a separate venv (default .cache/mergekit-venv) so it can never replace torch
here. Created with: ``python3 -m venv .cache/mergekit-venv``; a ``.pth`` file pointing at this
project's site-packages; ``pip install --no-deps mergekit immutables``.

    .venv/bin/python perf/merge_bench.py [--layers 22] [--workdir .cache/merge_bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, INTERMEDIATE, VOCAB, HEADS, KV_HEADS = 2048, 5632, 32000, 32, 4
GB = 1000**3

_PEAK = "import re; print('PEAK_RSS_KB', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"


def _shapes(layers: int) -> dict[str, tuple[int, ...]]:
    kv = HIDDEN // HEADS * KV_HEADS
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (HIDDEN,),
            f"{p}.self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            f"{p}.self_attn.k_proj.weight": (kv, HIDDEN),
            f"{p}.self_attn.v_proj.weight": (kv, HIDDEN),
            f"{p}.self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            f"{p}.post_attention_layernorm.weight": (HIDDEN,),
            f"{p}.mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{p}.mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            f"{p}.mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        }
    shapes |= {"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    return shapes


def build_models(workdir: Path, layers: int) -> list[Path]:
    """base + ft1..ft3 (skipped if already built with the same layer count)."""
    import torch
    from transformers import LlamaConfig

    from harness.core.checkpoints import CheckpointWriter

    names = ["base", "ft1", "ft2", "ft3"]
    stamp = workdir / f"built-{layers}-layers"
    paths = [workdir / n for n in names]
    if stamp.exists() and all(p.is_dir() for p in paths):
        return paths
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         tie_word_embeddings=False, torch_dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    shapes = _shapes(layers)
    for index, path in enumerate(paths):
        with CheckpointWriter(path, max_shard_size=GB) as writer:
            for t, (name, shape) in enumerate(shapes.items()):
                base_gen = torch.Generator().manual_seed(1000 + t)
                tensor = torch.randn(shape, generator=base_gen) * 0.02
                if index:
                    noise_gen = torch.Generator().manual_seed(index * 100000 + t)
                    tensor += torch.randn(shape, generator=noise_gen) * 0.002
                writer.add(name, tensor.to(torch.bfloat16))
        config.to_json_file(str(path / "config.json"))
    stamp.touch()
    return paths


def _run(label: str, argv: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return {"wall": wall, "peak_rss_gb": int(peak[-1]) * 1024 / 1024**3 if peak else float("nan")}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=22, help="decoder layers (default 22 = TinyLlama)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "merge_bench")
    parser.add_argument("--mergekit-python", type=Path, default=ROOT / ".cache" / "mergekit-venv" / "bin" / "python")
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic models and outputs")
    args = parser.parse_args()

    t0 = time.perf_counter()
    base, *fts = build_models(args.workdir, args.layers)
    print(f"built/reused 4 models of {_dir_bytes(base) / GB:.2f} GB ({args.layers} layers) "
          f"in {time.perf_counter() - t0:.0f} s")
    for model in (base, *fts):  # warm the page cache so every contender reads from memory alike
        for file in model.glob("*.safetensors"):
            with open(file, "rb") as handle:
                while handle.read(1 << 26):
                    pass
    outs = {k: args.workdir / f"out_{k}" for k in ("floor", "ours", "mergekit")}
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    py = sys.executable
    floor_code = textwrap.dedent(f"""
        from harness.core.checkpoints import CheckpointReader, CheckpointWriter
        readers = [CheckpointReader(p) for p in {[str(p) for p in (base, *fts)]!r}]
        with CheckpointWriter({str(outs['floor'])!r}, max_shard_size=1_000_000_000) as w:
            for name in readers[0].names():
                tensors = [r.get(name) for r in readers]
                w.add(name, tensors[0])
                del tensors
        {_PEAK}
    """)
    ours_code = textwrap.dedent(f"""
        from realign_methods import MergeSpec, merge
        merge(MergeSpec(method="ties", base={str(base)!r}, finetuned={[str(p) for p in fts]!r},
                        params={{"density": {args.density}, "lam": 1.0, "reduce": "mean"}},
                        out={str(outs['ours'])!r}, max_shard_size=1_000_000_000))
        {_PEAK}
    """)
    mk_yaml = {
        "merge_method": "ties", "base_model": str(base), "dtype": "bfloat16",
        "parameters": {"normalize": True},
        "models": [{"model": str(p), "parameters": {"density": args.density, "weight": 1.0}} for p in fts],
    }
    mk_code = textwrap.dedent(f"""
        import yaml
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
        config = MergeConfiguration.model_validate(yaml.safe_load({json.dumps(mk_yaml)!r}))
        run_merge(config, {str(outs['mergekit'])!r}, options=MergeOptions(copy_tokenizer=False, out_shard_size=1_000_000_000, lazy_unpickle=False))
        {_PEAK}
    """)
    results = {
        "I/O floor": _run("floor", [py, "-c", floor_code]),
        "ours (ties)": _run("ours", [py, "-c", ours_code]),
    }
    if args.mergekit_python.exists():
        results["mergekit (ties)"] = _run("mergekit", [str(args.mergekit_python), "-c", mk_code])
    else:
        print(f"mergekit venv not found at {args.mergekit_python}; skipping mergekit")

    moved = 4 * _dir_bytes(base) + _dir_bytes(base)  # read 4 models + write one
    print(f"\nTIES, 3 fine-tunes, density {args.density}, {args.layers} layers, bf16; "
          f"bytes moved per merge {moved / GB:.2f} GB (read 4 + write 1)")
    print(f"{'run':<18}{'wall s':>9}{'GB/s':>8}{'peak RSS GB':>13}")
    for label, r in results.items():
        print(f"{label:<18}{r['wall']:>9.1f}{moved / GB / r['wall']:>8.2f}{r['peak_rss_gb']:>13.2f}")
    ours, floor = results["ours (ties)"], results["I/O floor"]
    print("\ntargets:")
    if "mergekit (ties)" in results:
        ratio = ours["wall"] / results["mergekit (ties)"]["wall"]
        print(f"  ours wall / mergekit wall = {ratio:.2f}  (target ≤ 0.80: {'met' if ratio <= 0.8 else 'NOT met'})")
    tput = floor["wall"] / ours["wall"]
    print(f"  ours throughput / I/O floor = {tput:.2f}  (target ≥ 0.70: {'met' if tput >= 0.7 else 'NOT met'})")
    print(f"  ours peak RSS = {ours['peak_rss_gb']:.2f} GB  (target ≤ 2: {'met' if ours['peak_rss_gb'] <= 2 else 'NOT met'})")
    if "mergekit (ties)" in results:
        import torch
        from safetensors.torch import load_file

        name = "model.layers.0.mlp.down_proj.weight"
        a = {k: v for f in outs["ours"].glob("*.safetensors") for k, v in load_file(f).items() if k == name}[name]
        b = {k: v for f in outs["mergekit"].glob("*.safetensors") for k, v in load_file(f).items() if k == name}[name]
        print(f"  agreement on {name}: max |ours − mergekit| = {float((a.float() - b.float()).abs().max()):.2e}, "
              f"relative L2 = {float(torch.linalg.norm(a.float() - b.float()) / torch.linalg.norm(b.float())):.2e}")
    if not args.keep:
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
