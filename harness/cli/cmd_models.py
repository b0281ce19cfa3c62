"""`realign models ...`: import the bundled GGUF, inspect checkpoints, merge LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import click

from harness.core.checkpoints import CheckpointReader, checkpoint_hash, import_gguf, merge_adapter


@click.group()
def models() -> None:
    """Model checkpoints: import, inspect, merge adapters."""


@models.command("import-gguf")
@click.option("--gguf", "gguf_file", type=click.Path(path_type=Path), help="GGUF file (default: bundled SmolLM2).")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory (default: the model cache).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def import_gguf_command(gguf_file: Path | None, out: Path | None, overwrite: bool) -> None:
    """Convert a GGUF (default: the bundled SmolLM2-135M-Instruct) into a safetensors model directory."""
    import time

    start = time.perf_counter()
    path = import_gguf(out, gguf_file, overwrite=overwrite)
    click.echo(f"{path}  ({time.perf_counter() - start:.1f} s)")


@models.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--allow-pickle", is_flag=True, help="Load pickle checkpoints (torch.load weights_only=True).")
@click.option("--no-hash", is_flag=True, help="Skip the sha256 of the weight files.")
@click.option("--tensors", "list_tensors", is_flag=True, help="List every tensor with shape and dtype.")
def inspect_command(path: Path, allow_pickle: bool, no_hash: bool, list_tensors: bool) -> None:
    """Summarise a checkpoint: tensors, dtypes, parameters, shards, hashes."""
    from collections import Counter
    from math import prod

    with CheckpointReader(path, allow_pickle=allow_pickle) as reader:
        names = reader.names()
        dtypes = Counter(str(reader.dtype(n)).removeprefix("torch.") for n in names)
        params = sum(prod(reader.shape(n)) for n in names)
        size = sum(reader.nbytes(n) for n in names)
        config = reader.config
        click.echo(f"path:        {reader.path}")
        if config:
            arch = ",".join(config.get("architectures") or [config.get("model_type", "?")])
            click.echo(f"model:       {arch}")
        click.echo(f"tensors:     {len(names)}")
        click.echo(f"parameters:  {params:,} ({params / 1e6:.1f} M)")
        click.echo(f"dtypes:      {', '.join(f'{d} x{c}' for d, c in sorted(dtypes.items()))}")
        click.echo(f"size:        {size / 2**20:.1f} MiB in {len(reader.files)} file(s)")
        if not no_hash:
            for name, digest in reader.file_hashes().items():
                click.echo(f"  {name}  sha256:{digest}")
            click.echo(f"content hash: {checkpoint_hash(reader.path)}")
        else:
            for file in reader.files:
                click.echo(f"  {file.name}")
        if list_tensors:
            for name in names:
                shape = "x".join(map(str, reader.shape(name)))
                click.echo(f"  {name}  {shape}  {str(reader.dtype(name)).removeprefix('torch.')}")


@models.command("merge-adapter")
@click.option("--base", required=True, type=click.Path(path_type=Path), help="Base model directory.")
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="PEFT LoRA adapter directory.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output model directory.")
@click.option("--max-shard-size", default="2GB", show_default=True, help="Shard size (bytes, or e.g. 500MB, 2GB).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def merge_adapter_command(base: Path, adapter: Path, out: Path, max_shard_size: str, overwrite: bool) -> None:
    """Merge a LoRA adapter into its base model (streamed, fp32 math, base dtype out)."""
    path = merge_adapter(base, adapter, out, max_shard_size=max_shard_size, overwrite=overwrite)
    click.echo(str(path))
