"""CheckpointReader / CheckpointWriter on real safetensors model directories (tiny random Llamas)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.core.checkpoints import PROVENANCE_FILE, CheckpointReader, CheckpointWriter, parse_size
from harness.core.errors import CheckpointError


def _copy_sharded(reader: CheckpointReader, out: Path, max_shard_size: int, **kwargs) -> Path:
    with CheckpointWriter(out, max_shard_size=max_shard_size, copy_aux_from=reader.path, **kwargs) as writer:
        for name in reader.names():
            writer.add(name, reader.get(name))
    return out


def test_reader_reads_headers_and_tensors(tiny_llama_factory) -> None:
    base = tiny_llama_factory("base")
    state = load_file(base / "model.safetensors")
    with CheckpointReader(base) as reader:
        assert sorted(reader.names()) == sorted(state)
        assert reader.files == [base / "model.safetensors"]
        assert reader.config["model_type"] == "llama"
        for name, tensor in state.items():
            assert reader.shape(name) == tuple(tensor.shape)
            assert reader.dtype(name) == tensor.dtype
            assert torch.equal(reader.get(name), tensor)
        hashes = reader.file_hashes()
        assert set(hashes) == {"model.safetensors"} and len(hashes["model.safetensors"]) == 64
    # A single .safetensors file path works too.
    single = CheckpointReader(base / "model.safetensors")
    assert len(single) == len(state)


def test_sharded_round_trip_loads_in_transformers(tiny_llama_factory, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_llama_factory("base")
    out = tmp_path / "copy"
    reader = CheckpointReader(base)
    _copy_sharded(reader, out, max_shard_size=60_000, metadata={"method": "copy", "gamma": 0.5})

    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(reader.names())
    assert index["metadata"]["total_size"] == sum(reader.nbytes(n) for n in reader.names())
    # Each shard stays within the limit unless it holds a single larger tensor.
    for shard in shards:
        tensors = load_file(out / shard)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= 60_000 or len(tensors) == 1
    # Aux files carried over, provenance written, safetensors metadata on every shard.
    for aux in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / aux).read_bytes() == (base / aux).read_bytes()
    assert json.loads((out / PROVENANCE_FILE).read_text()) == {"method": "copy", "gamma": 0.5}
    copied = CheckpointReader(out)
    assert copied.metadata == {"format": "pt", "method": "copy", "gamma": "0.5"}
    for name in reader.names():
        assert torch.equal(copied.get(name), reader.get(name))

    model = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("How do I bake bread?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    assert tokenizer.chat_template is not None
    assert not list(tmp_path.glob(".copy.tmp-*"))


def test_single_shard_is_named_model_safetensors(tiny_llama_factory, tmp_path: Path) -> None:
    base = tiny_llama_factory("base")
    out = _copy_sharded(CheckpointReader(base), tmp_path / "one", max_shard_size=2**30)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    assert not (out / PROVENANCE_FILE).exists()


def test_writer_abort_on_exception_leaves_nothing(tiny_llama_factory, tmp_path: Path) -> None:
    reader = CheckpointReader(tiny_llama_factory("base"))
    out = tmp_path / "half"
    with pytest.raises(RuntimeError, match="boom"), CheckpointWriter(out, max_shard_size=10_000) as writer:
        for index, name in enumerate(reader.names()):
            writer.add(name, reader.get(name))
            if index == 5:
                assert any(writer.tmp_dir.glob("*.safetensors"))  # shards were already flushed
                raise RuntimeError("boom")
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_writer_refuses_existing_output_and_duplicates(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match=r"already exists.*overwrite"):
        CheckpointWriter(out)
    with CheckpointWriter(out, overwrite=True) as writer:
        writer.add("a", torch.ones(3))
        with pytest.raises(CheckpointError, match="'a' added twice"):
            writer.add("a", torch.ones(3))
    assert torch.equal(CheckpointReader(out).get("a"), torch.ones(3))
    with pytest.raises(CheckpointError, match="no tensors"):
        CheckpointWriter(tmp_path / "empty").commit()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_writer_handles_tied_tensors(tmp_path: Path) -> None:
    shared = torch.randn(4, 4)
    with CheckpointWriter(tmp_path / "tied") as writer:
        writer.add("embed.weight", shared)
        writer.add("lm_head.weight", shared)
    reader = CheckpointReader(tmp_path / "tied")
    assert torch.equal(reader.get("embed.weight"), reader.get("lm_head.weight"))


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint not found: {tmp_path / 'nope'}")):
        CheckpointReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no weights found"):
        CheckpointReader(tmp_path / "empty")


@pytest.mark.parametrize("cut", [4, 40, -100])
def test_truncated_safetensors_names_file(tmp_path: Path, cut: int) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(64, 64), "b": torch.randn(64)}, str(good))
    data = good.read_bytes()
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|corrupt|not a safetensors)"):
        CheckpointReader(bad)


def test_corrupt_header_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes((10).to_bytes(8, "little") + b"not json!!" + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors header"):
        CheckpointReader(tmp_path)


def test_index_naming_missing_shard(tiny_llama_factory, tmp_path: Path) -> None:
    out = _copy_sharded(CheckpointReader(tiny_llama_factory("base")), tmp_path / "sharded", max_shard_size=60_000)
    (out / "model-00002-of-00003.safetensors").unlink(missing_ok=True)
    victim = sorted(out.glob("model-*.safetensors"))[0]
    victim.unlink()
    with pytest.raises(CheckpointError, match=rf"shard file.*{re.escape(victim.name)}"):
        CheckpointReader(out)


def test_pickle_refused_without_flag_and_loaded_with_it(tmp_path: Path) -> None:
    state = {"layer.weight": torch.randn(3, 5), "layer.bias": torch.randn(3)}
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin is a pickle.*allow_pickle=True"):
        CheckpointReader(model_dir)
    with pytest.raises(CheckpointError, match=r"weights\.pt is a pickle"):
        torch.save(state, tmp_path / "weights.pt")
        CheckpointReader(tmp_path / "weights.pt")
    reader = CheckpointReader(model_dir, allow_pickle=True)
    assert sorted(reader.names()) == sorted(state)
    assert reader.shape("layer.weight") == (3, 5) and reader.dtype("layer.bias") == torch.float32
    assert torch.equal(reader.get("layer.weight"), state["layer.weight"])


def test_pickle_with_code_is_rejected_even_with_flag(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"w": torch.ones(1), "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: cannot load pickle checkpoint with weights_only=True"):
        CheckpointReader(tmp_path / "evil.pt", allow_pickle=True)


def test_overwrite_replaces_and_provenance_is_not_inherited(tiny_llama_factory, tmp_path: Path) -> None:
    reader = CheckpointReader(tiny_llama_factory("base"))
    first = _copy_sharded(reader, tmp_path / "first", max_shard_size="40KB", metadata={"step": 1})
    assert len(CheckpointReader(first).files) > 1
    (first / "stale.txt").write_text("from the old output")
    # Rewriting the same directory from itself: single shard now, no stale files, fresh provenance only.
    with CheckpointWriter(first, copy_aux_from=reader.path, overwrite=True) as writer:
        for name in reader.names():
            writer.add(name, reader.get(name))
    assert sorted(p.name for p in first.glob("*.safetensors")) == ["model.safetensors"]
    assert not (first / "stale.txt").exists() and not (first / PROVENANCE_FILE).exists()
    assert not (first / "model.safetensors.index.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["first"]


def test_two_writers_for_one_output_do_not_collide(tmp_path: Path) -> None:
    out = tmp_path / "out"
    one, two = CheckpointWriter(out), CheckpointWriter(out)
    assert one.tmp_dir != two.tmp_dir
    one.add("x", torch.zeros(2))
    two.add("x", torch.ones(2))
    one.commit()
    with pytest.raises(CheckpointError, match="already exists"):
        two.commit()
    assert torch.equal(CheckpointReader(out).get("x"), torch.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_explicit_abort_and_use_after_commit(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "out")
    writer.add("x", torch.zeros(2))
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match="already aborted"):
        writer.add("y", torch.zeros(2))


def test_parse_size() -> None:
    assert parse_size(1000) == 1000 and parse_size("500MB") == 500 * 10**6 and parse_size("2GiB") == 2 * 2**30
    for bad in ("lots", "-1", 0):
        with pytest.raises(CheckpointError, match="size"):
            parse_size(bad)


def test_index_mapping_tensor_to_wrong_shard(tiny_llama_factory, tmp_path: Path) -> None:
    out = _copy_sharded(CheckpointReader(tiny_llama_factory("base")), tmp_path / "sharded", max_shard_size=60_000)
    index_path = out / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != shard)
    index["weight_map"][name] = other
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"tensor '{re.escape(name)}' is mapped to {re.escape(other)}"):
        CheckpointReader(out)


def test_sharded_pickle_with_index(tmp_path: Path) -> None:
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    shards = {
        "pytorch_model-00001-of-00002.bin": {"a": torch.ones(2)},
        "pytorch_model-00002-of-00002.bin": {"b": torch.zeros(3)},
    }
    for file_name, state in shards.items():
        torch.save(state, model_dir / file_name)
    weight_map = {name: file_name for file_name, state in shards.items() for name in state}
    (model_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"pytorch_model-00001-of-00002\.bin is a pickle"):
        CheckpointReader(model_dir)
    reader = CheckpointReader(model_dir, allow_pickle=True)
    assert sorted(reader.names()) == ["a", "b"] and torch.equal(reader.get("b"), torch.zeros(3))
    assert set(reader.file_hashes()) == set(shards)


def _layout(reader: CheckpointReader) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(reader.shape(name)), reader.get(name).dtype) for name in reader.names()]


@pytest.mark.parametrize("max_shard_size", [10_000, 2**30])
def test_planned_writer_equals_the_buffered_one(tiny_llama_factory, tmp_path: Path, max_shard_size: int) -> None:
    """With a layout, shards are planned up front and each tensor is written in place as it arrives."""
    reader = CheckpointReader(tiny_llama_factory("base"))
    buffered = _copy_sharded(reader, tmp_path / "buffered", max_shard_size)
    planned = _copy_sharded(reader, tmp_path / "planned", max_shard_size, layout=_layout(reader))
    shards = sorted(p.name for p in buffered.glob("*.safetensors"))
    assert sorted(p.name for p in planned.glob("*.safetensors")) == shards
    assert (len(shards) > 1) == (max_shard_size == 10_000)
    if len(shards) > 1:
        assert json.loads((planned / "model.safetensors.index.json").read_text()) == json.loads(
            (buffered / "model.safetensors.index.json").read_text()
        )
    for shard in shards:  # safetensors' own loader reads the planned files; same tensors, same grouping
        want, got = load_file(buffered / shard), load_file(planned / shard)
        assert set(got) == set(want)
        assert all(torch.equal(got[name], want[name]) for name in want)
    again = _copy_sharded(reader, tmp_path / "again", max_shard_size, layout=_layout(reader))
    assert all((again / s).read_bytes() == (planned / s).read_bytes() for s in shards)  # deterministic bytes


def test_planned_writer_refuses_what_the_layout_does_not_say(tmp_path: Path) -> None:
    layout = [("a", (2, 3), torch.float32), ("b", (4,), torch.bfloat16)]
    with (
        pytest.raises(CheckpointError, match=r"tensor 'c' is not in the layout planned for .*/out"),
        CheckpointWriter(tmp_path / "out", layout=layout) as writer,
    ):
        writer.add("c", torch.ones(2, 3))
    with (
        pytest.raises(CheckpointError, match=r"tensor 'a': got \[3, 2\] torch.float32, .* has \[2, 3\] torch.float32"),
        CheckpointWriter(tmp_path / "out", layout=layout) as writer,
    ):
        writer.add("a", torch.ones(3, 2))
    with (
        pytest.raises(CheckpointError, match=r"tensor 'b': got \[4\] torch.float32, .* has \[4\] torch.bfloat16"),
        CheckpointWriter(tmp_path / "out", layout=layout) as writer,
    ):
        writer.add("b", torch.ones(4))
    with (
        pytest.raises(CheckpointError, match=r"tensor 'b' is in the layout planned for .* but was never added"),
        CheckpointWriter(tmp_path / "out", layout=layout) as writer,
    ):
        writer.add("a", torch.ones(2, 3))
    with pytest.raises(CheckpointError, match="tensor 'a' appears twice in the checkpoint layout"):
        CheckpointWriter(tmp_path / "out", layout=[*layout, ("a", (1,), torch.float32)])
    assert os.listdir(tmp_path) == []  # every refusal removed its temp dir
    with CheckpointWriter(tmp_path / "out", layout=layout) as writer:
        writer.add("b", torch.arange(4).to(torch.bfloat16))  # any order
        writer.add("a", torch.ones(2, 3))
    loaded = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(loaded["b"], torch.arange(4).to(torch.bfloat16)) and torch.equal(loaded["a"], torch.ones(2, 3))
