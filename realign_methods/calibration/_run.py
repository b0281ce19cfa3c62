"""One generic calibration pass (hf transformers, CPU, float32) with forward/backward hooks.

Statistics stream per linear layer (float32 accumulators, padding masked out), so memory is one copy
of the model plus one accumulator per statistic and layer. Results are cached by content under
``cache_dir()/calibration/<key>/`` (safetensors + ``manifest.json``), built in a temp dir renamed into
place: a finished key is reused, an interrupted one restarts from scratch and never leaves half files.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.core.checkpoints import CheckpointReader
from harness.core.checkpoints._atomic import make_temp_dir, move_into_place
from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import canonical_json, hash_value, sha256_file
from harness.core.paths import cache_dir
from realign_methods.calibration._data import Example, load_examples
from realign_methods.calibration._spec import CalibrationSpec

MANIFEST = "manifest.json"
_FORMAT_VERSION = 1
_BATCH = 8


class Statistics:
    """A finished calibration: per-weight statistics read lazily from its cache directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest: dict[str, Any] = json.loads((root / MANIFEST).read_text(encoding="utf-8"))

    @property
    def cost(self) -> dict[str, Any]:
        """What the pass cost (wall seconds, examples, tokens, peak RSS) and whether it was reused."""
        return dict(self.manifest["cost"])

    @property
    def layers(self) -> list[str]:
        """Weight names of the linear layers that have statistics."""
        return list(self.manifest["layers"])

    def has(self, name: str) -> bool:
        return name in self.manifest["layers"]

    def _read(self, statistic: str, key: str) -> torch.Tensor:
        if statistic not in self.manifest["statistics"]:
            raise ConfigError(
                f"calibration {self.root}: statistic {statistic!r} was not computed "
                f"(computed: {self.manifest['statistics']})"
            )
        if key not in self.manifest["layers"] and key not in self.manifest["aliases"].values():
            raise KeyError(f"calibration {self.root}: no statistics for '{key}'")
        with safe_open(str(self.root / f"{statistic}.safetensors"), framework="pt", device="cpu") as handle:
            return handle.get_tensor(key)

    def input_norms(self, name: str) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens, one per input column of weight ``name``."""
        return self._read("input_norms", self.manifest["aliases"].get(name, name))

    def xtx(self, name: str) -> torch.Tensor:
        """Σ_tokens x xᵀ of weight ``name``'s inputs [in, in] (layers fed the same tensor share one)."""
        return self._read("xtx", self.manifest["aliases"].get(name, name))

    def fisher(self, name: str) -> torch.Tensor:
        """Mean over examples of (∂ loss/∂ w)², the shape of weight ``name``."""
        return self._read("fisher", name)


def calibration_key(
    reader: CheckpointReader, spec: CalibrationSpec, data: Path, examples: int, max_length: int, seed: int
) -> str:
    """Content key: the model's weight hashes, the data file's hash, the spec and its sizes."""
    return hash_value(
        {
            "version": _FORMAT_VERSION,
            "model": reader.file_hashes(),
            "data": sha256_file(data),
            "spec": asdict(spec)
            | {"statistics": sorted(spec.statistics), "examples": examples, "max_length": max_length},
            "seed": seed,
        },
        length=24,
    )


def calibrate(
    reader: CheckpointReader,
    spec: CalibrationSpec,
    data: Path,
    *,
    examples: int | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> Statistics:
    """Statistics of the model ``reader`` reads on ``data`` (cached by content; see the module doc)."""
    count = spec.examples if examples is None else examples
    length = spec.max_length if max_length is None else max_length
    if count < 1 or length < 8:
        raise ConfigError(f"calibration: examples must be ≥ 1 and max_length ≥ 8, got {count}, {length}")
    key = calibration_key(reader, spec, data, count, length, seed)
    out = cache_dir() / "calibration" / key
    if (out / MANIFEST).is_file():
        stats = Statistics(out)
        stats.manifest["cost"]["reused"] = True
        return stats
    rows = load_examples(data, count, seed)
    tmp = make_temp_dir(out)
    try:
        manifest = _run(reader, spec, rows, length, tmp)
        manifest.update(
            key=key,
            data={"path": str(data), "sha256": sha256_file(data)},
            model={"path": str(reader.path), "sha256": reader.file_hashes()},
        )
        (tmp / MANIFEST).write_text(canonical_json(manifest) + "\n", encoding="utf-8")
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    stats = Statistics(out)
    stats.manifest["cost"]["reused"] = False
    return stats


def _load_model(reader: CheckpointReader) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (reader.root / "config.json").is_file():
        raise CheckpointError(f"calibration needs a transformers model directory; {reader.root} has no config.json")
    config = AutoConfig.from_pretrained(reader.root)
    model = AutoModelForCausalLM.from_config(config)
    torch.nn.Module.to(model, torch.float32)
    state = {name: reader.get(name).float() for name in reader.names()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"{reader.path}: weights do not fit its config.json "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    model.tie_weights()
    model.eval()
    return model


def _encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + response (chat template when the tokenizer has one) and the prompt length."""
    if getattr(tokenizer, "chat_template", None):
        user = [{"role": "user", "content": example.prompt}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": example.response}], tokenize=False
        )
    else:
        prompt = example.prompt + "\n"
        full = prompt + example.response + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    return ids, min(len(prompt_ids), len(ids))


def _batches(
    encoded: list[tuple[list[int], int]], size: int, pad: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, labels) with right padding; labels -100 on prompt and padding."""
    for start in range(0, len(encoded), size):
        chunk = encoded[start : start + size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, (tokens, prompt_len) in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
            labels[row, prompt_len : len(tokens)] = torch.tensor(tokens[prompt_len:])
        yield ids, mask, labels


def _run(
    reader: CheckpointReader, spec: CalibrationSpec, rows: list[Example], max_length: int, out: Path
) -> dict[str, Any]:
    from transformers import AutoTokenizer

    started = time.perf_counter()
    model = _load_model(reader)
    tokenizer = AutoTokenizer.from_pretrained(reader.root)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = [_encode(tokenizer, row, max_length) for row in rows]
    names = set(reader.names())
    output_embeddings = model.get_output_embeddings()
    linears = {
        f"{n}.weight": m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and f"{n}.weight" in names and m is not output_embeddings
    }
    if not linears:
        raise CheckpointError(f"{reader.path}: no linear layers to calibrate")
    want = spec.statistics
    norms: dict[str, torch.Tensor] = {}
    xtx: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    # inputs of this forward (held, so no freed buffer's address is reused): layers fed the same
    # tensor (q/k/v, gate/up) share one accumulator
    seen: dict[tuple[int, tuple[int, ...]], tuple[str, torch.Tensor]] = {}
    token_mask: list[torch.Tensor] = []

    def hook_for(name: str) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            ident = (x.data_ptr(), tuple(x.shape))
            if ident in seen:
                aliases[name] = seen[ident][0]
                return
            seen[ident] = (name, x)
            flat = x.reshape(-1, x.shape[-1])[token_mask[0]].float()
            if "input_norms" in want:
                norms[name] = norms.get(name, 0) + (flat * flat).sum(0)
            if "xtx" in want:
                xtx[name] = xtx.get(name, 0) + flat.T @ flat

        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in linears.items()]
    fisher: dict[str, torch.Tensor] = {}
    tokens = 0
    try:
        with_grad = "fisher" in want
        for param in model.parameters():
            param.requires_grad_(False)
        for name in linears:
            linears[name].weight.requires_grad_(with_grad)
        for ids, mask, labels in _batches(encoded, 1 if with_grad else _BATCH, pad):
            seen.clear()
            token_mask[:] = [mask.reshape(-1).bool()]
            tokens += int(mask.sum())
            if not with_grad:
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=mask)
                continue
            model.zero_grad(set_to_none=True)
            if int((labels != -100).sum()) == 0:
                raise ConfigError("calibration: an example has no response tokens within max_length; raise max_length")
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            for name, module in linears.items():
                grad = module.weight.grad
                assert grad is not None
                fisher[name] = fisher.get(name, 0) + grad * grad  # float32: one model-sized accumulator
    finally:
        for handle in handles:
            handle.remove()
    owners = sorted(set(linears) - set(aliases))
    if "input_norms" in want:
        save_file({n: norms[n].sqrt().float().contiguous() for n in owners}, str(out / "input_norms.safetensors"))
    if "xtx" in want:
        save_file({n: xtx[n].float().contiguous() for n in owners}, str(out / "xtx.safetensors"))
    if with_grad:
        save_file(
            {n: (f / len(encoded)).float().contiguous() for n, f in fisher.items()}, str(out / "fisher.safetensors")
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "spec": asdict(spec) | {"statistics": sorted(spec.statistics)},
        "statistics": sorted(want),
        "layers": sorted(linears),
        "aliases": dict(sorted(aliases.items())),
        "cost": {
            "seconds": round(time.perf_counter() - started, 3),
            "examples": len(encoded),
            "tokens": tokens,
            "max_length": max_length,
            "peak_rss_mib": round(peak_mib, 1),
        },
    }
