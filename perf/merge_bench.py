"""Merge benchmark: our streaming TA/TIES/DARE-TIES vs mergekit's vs the pure-I/O floor, side by side.

Builds synthetic TinyLlama-shape checkpoints (hidden 2048, intermediate 5632, vocab 32000, 32/4
heads, bf16, sharded at 1 GB): a base and three fine-tunes (base + small noise). Default 22 layers
(≈2.2 GB per model); ``--layers N`` scales the depth down. Each contender runs in its own child
process, which reports its own peak RSS (VmHWM; it includes resident pages of memory-mapped input
files) and is sampled for peak RssAnon (its own memory) and RssFile (mapped input pages, which
the page cache owns), plus children CPU seconds (more stable than wall time on a shared machine).
Targets (issue 14): TIES wall ≤ 0.33× mergekit's and throughput ≥ 0.25× the I/O floor's; task
arithmetic ≥ 0.7× the floor; RssAnon ≤ 1 GB. A row per method extrapolates the wall time to a 7B
shape (13.5 GB per bf16 model) from the time per GB moved.

mergekit runs from a separate venv (default .cache/mergekit-venv) so it can never replace torch
here. Created with: ``python3 -m venv .cache/mergekit-venv``; a ``.pth`` file pointing at this
project's site-packages; ``pip install --no-deps mergekit==0.1.5 immutables``.

    .venv/bin/python perf/merge_bench.py [--layers 22] [--workdir .cache/merge_bench] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
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
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
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


def _rss_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, RssFile) of a live process in kB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return (int(fields.get("RssAnon", "0 kB").split()[0]), int(fields.get("RssFile", "0 kB").split()[0]))


def _run(label: str, argv: list[str]) -> dict[str, float]:
    """Run one contender; samples its anonymous and file-backed RSS every 20 ms (mapped input pages
    are file-backed: the page cache holds them, they are not the merge's memory cost)."""
    start, cpu_start = time.perf_counter(), os.times()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak_anon = peak_file = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        output = pool.submit(proc.communicate)
        while proc.poll() is None:
            anon, mapped = _rss_kb(proc.pid)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, mapped)
            time.sleep(0.02)
        stdout, stderr = output.result()
    wall = time.perf_counter() - start
    cpu_end = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    peak = [line.split()[1] for line in stdout.splitlines() if line.startswith("PEAK_RSS_KB")]
    return {
        "wall": wall,
        "cpu": (cpu_end.children_user + cpu_end.children_system)
        - (cpu_start.children_user + cpu_start.children_system),
        "peak_rss_gb": int(peak[-1]) * 1024 / 1024**3 if peak else float("nan"),
        "anon_gb": peak_anon * 1024 / 1024**3,
        "file_gb": peak_file * 1024 / 1024**3,
    }


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=22, help="decoder layers (default 22 = TinyLlama)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "merge_bench")
    parser.add_argument("--mergekit-python", type=Path, default=ROOT / ".cache" / "mergekit-venv" / "bin" / "python")
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic models and outputs")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["task_arithmetic", "ties", "dare_ties"],
        choices=["task_arithmetic", "ties", "dare_ties"],
    )
    parser.add_argument("--threads", type=int, default=None, help="our compute threads (default all cores)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    base, *fts = build_models(args.workdir, args.layers)
    print(
        f"built/reused 4 models of {_dir_bytes(base) / GB:.2f} GB ({args.layers} layers) "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    for model in (base, *fts):  # warm the page cache so every contender reads from memory alike
        for file in model.glob("*.safetensors"):
            with open(file, "rb") as handle:
                while handle.read(1 << 26):
                    pass
    # Merges record every input shard's sha256 in their provenance, memoised on disk by (path, size,
    # mtime, inode): in a study each fine-tune is merged by every method, so all but the first merge
    # of an input find it memoised. Warm the memo here so no contender pays (or skips) it alone.
    os.environ["REALIGN_CACHE_DIR"] = str(args.workdir / "realign-cache")
    from harness.core.hashing import sha256_file_memo

    t0 = time.perf_counter()
    for model in (base, *fts):
        for file in model.glob("*.safetensors"):
            sha256_file_memo(file)
    print(f"input hashes memoised in {time.perf_counter() - t0:.1f} s (a cold first merge pays this once)")
    py = sys.executable
    inputs = [str(p) for p in (base, *fts)]
    floor_out = args.workdir / "out_floor"
    shutil.rmtree(floor_out, ignore_errors=True)
    floor_code = textwrap.dedent(f"""
        import torch
        from harness.core.checkpoints import CheckpointReader, CheckpointWriter
        readers = [CheckpointReader(p) for p in {inputs!r}]
        # the streaming (planned-layout) writer the engine uses: the floor holds no shard in memory either
        layout = [(n, readers[0].shape(n), readers[0].dtype(n)) for n in readers[0].names()]
        # A read tensor is a lazy memory map: nothing is read until its pages are touched. Copy every
        # fine-tune's bytes into one reused buffer so the floor reads all 4 models (the first is read
        # by the write), as a merge must; without it the floor moved 2 models and claimed 5.
        scratch = torch.empty(max(readers[0].nbytes(n) for n in readers[0].names()), dtype=torch.uint8)
        with CheckpointWriter({str(floor_out)!r}, max_shard_size=1_000_000_000, layout=layout) as w:
            for name in readers[0].names():
                tensors = [r.get(name) for r in readers]
                for tensor in tensors[1:]:
                    raw = tensor.reshape(-1).view(torch.uint8)
                    scratch[: raw.numel()].copy_(raw)
                w.add(name, tensors[0])
                del tensors
        {_PEAK}
    """)
    results = {"I/O floor": _run("floor", [py, "-c", floor_code])}
    shutil.rmtree(floor_out, ignore_errors=True)
    moved = 4 * _dir_bytes(base) + _dir_bytes(base)  # read 4 models + write one
    # DARE-TIES keeps the same fraction as TIES (p = 1 − density); its random draws differ from
    # mergekit's (per-tensor seeded generator vs torch's global RNG), so only its timing compares.
    ours_params = {
        "ties": {"density": args.density, "lam": 1.0, "reduce": "mean"},
        "task_arithmetic": {"lam": 1.0},
        "dare_ties": {"p": 1.0 - args.density, "lam": 1.0, "reduce": "mean"},
    }
    mk_params = {
        "ties": ({"normalize": True}, {"density": args.density, "weight": 1.0}),
        "task_arithmetic": ({"normalize": False}, {"weight": 1.0}),
        "dare_ties": ({"normalize": True}, {"density": args.density, "weight": 1.0}),
    }
    agreement: dict[str, str] = {}
    for method in args.methods:
        out_ours, out_mk = args.workdir / f"out_ours_{method}", args.workdir / f"out_mk_{method}"
        for out in (out_ours, out_mk):
            shutil.rmtree(out, ignore_errors=True)
        ours_code = textwrap.dedent(f"""
            from realign_methods import MergeSpec, merge
            merge(MergeSpec(method={method!r}, base={str(base)!r}, finetuned={inputs[1:]!r},
                            params={ours_params[method]!r}, out={str(out_ours)!r}, max_shard_size=1_000_000_000),
                  threads={args.threads!r})
            {_PEAK}
        """)
        results[f"ours ({method})"] = _run("ours", [py, "-c", ours_code])
        if not args.mergekit_python.exists():
            print(f"mergekit venv not found at {args.mergekit_python}; skipping mergekit")
            continue
        shared, per_model = mk_params[method]
        mk_yaml = {
            "merge_method": method,
            "base_model": str(base),
            "dtype": "bfloat16",
            "parameters": shared,
            "models": [{"model": p, "parameters": per_model} for p in inputs[1:]],
        }
        mk_code = textwrap.dedent(f"""
            import yaml
            from mergekit.config import MergeConfiguration
            from mergekit.merge import run_merge
            from mergekit.options import MergeOptions
            config = MergeConfiguration.model_validate(yaml.safe_load({json.dumps(mk_yaml)!r}))
            run_merge(config, {str(out_mk)!r}, options=MergeOptions(
                copy_tokenizer=False, out_shard_size=1_000_000_000, lazy_unpickle=False))
            {_PEAK}
        """)
        results[f"mergekit ({method})"] = _run("mergekit", [str(args.mergekit_python), "-c", mk_code])
        agreement[method] = _agreement(out_ours, out_mk)
        if not args.keep:
            for out in (out_ours, out_mk):
                shutil.rmtree(out, ignore_errors=True)

    print(
        f"\n3 fine-tunes, density {args.density}, {args.layers} layers, bf16; "
        f"bytes moved per merge {moved / GB:.2f} GB (read 4 + write 1); {os.cpu_count()} cores"
    )
    print(f"{'run':<26}{'wall s':>8}{'cpu s':>8}{'GB/s':>7}{'VmHWM GB':>10}{'RssAnon GB':>12}{'RssFile GB':>12}")
    for label, r in results.items():
        print(
            f"{label:<26}{r['wall']:>8.1f}{r['cpu']:>8.1f}{moved / GB / r['wall']:>7.2f}{r['peak_rss_gb']:>10.2f}"
            f"{r['anon_gb']:>12.2f}{r['file_gb']:>12.2f}"
        )
        if label.startswith("ours"):  # time per GB moved, scaled to a 7B shape (4 × 13.5 GB read + 13.5 written)
            seven_b = 5 * 13.5 * r["wall"] / (moved / GB)
            print(f"{'  ↳ extrapolated to 7B':<26}{seven_b:>8.0f}")
    floor = results["I/O floor"]
    print("\nratios (noisy on a shared machine: all rows above come from this one run):")
    for method in args.methods:
        ours = results[f"ours ({method})"]
        if f"mergekit ({method})" in results:
            print(
                f"  {method}: ours wall / mergekit wall = {ours['wall'] / results[f'mergekit ({method})']['wall']:.2f}"
            )
        print(f"  {method}: ours throughput / I/O floor = {floor['wall'] / ours['wall']:.2f}")
        print(f"  {method}: ours peak RssAnon = {ours['anon_gb']:.2f} GB")
        if method in agreement:
            print(f"  {method}: {agreement[method]}")


def _agreement(ours: Path, mergekit: Path) -> str:
    import torch
    from safetensors import safe_open

    name = "model.layers.0.mlp.down_proj.weight"

    def load(folder: Path) -> torch.Tensor:
        for file in folder.glob("*.safetensors"):
            with safe_open(str(file), framework="pt") as handle:
                if name in handle.keys():  # noqa: SIM118 (safe_open has no __contains__)
                    return handle.get_tensor(name).float()
        raise SystemExit(f"{name} not found in {folder}")

    a, b = load(ours), load(mergekit)
    return (
        f"agreement on {name}: max |ours − mergekit| = {float((a - b).abs().max()):.2e}, "
        f"relative L2 = {float(torch.linalg.norm(a - b) / torch.linalg.norm(b)):.2e}"
    )


if __name__ == "__main__":
    main()
