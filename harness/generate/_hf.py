"""Hugging Face transformers backend: batched ``generate`` with left padding, PEFT LoRA adapters."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import CheckpointError, ConfigError
from harness.generate._adapter import adapter_hash
from harness.generate._config import Completion, FinishReason, GenerationConfig, truncate_at_stop
from harness.generate._greedy import DECODE_ATTENTION, greedy_decode, register_decode_attention, supports_greedy_loop
from harness.generate._seeds import prompt_seed
from harness.generate._weights import check_model_weights

log = logging.getLogger(__name__)

DECODERS = ("harness", "generate")


class HFBackend:
    """``transformers`` generation on CPU or GPU.

    Greedy decoding runs ``config.batch_size`` prompts as one decode batch through the harness's own
    loop (:mod:`harness.generate._greedy`: shared prompt prefix computed once, length-sorted prefill
    chunks of ``prefill_batch``, finished rows leave the batch); ``decoder="generate"`` uses
    ``model.generate`` instead (left padding, length-sorted batches), as does a model whose KV cache
    the loop does not handle. Sampled decoding runs one prompt at a time (its ``num_samples``
    together) with a per-prompt seed, so a prompt's samples do not depend on which other prompts share
    its batch. Outputs are returned in the caller's order. LoRA adapters are applied with PEFT and
    switched with ``set_adapter`` without reloading the base model.
    """

    name = "hf"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        adapter: str | Path | None = None,
        tokenizer_dir: str | Path | None = None,
        dtype: str = "auto",
        device: str | None = None,
        num_threads: int | None = None,
        decoder: str = "harness",
        prefill_batch: int = 16,
        allow_pickle: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise CheckpointError(f"{self.model_dir}: not a model directory (config.json not found)")
        if num_threads is not None:
            # On a shared CPU, fewer intra-op threads than cores avoids OpenMP barrier stalls
            # (measured here: 1 thread 39-45 tok/s vs 2 threads 7-12 tok/s with other jobs running).
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype, None)
        if torch_dtype is None:
            raise ConfigError(f"dtype {dtype!r} is not a torch dtype (expected e.g. float32, bfloat16)")
        if decoder not in DECODERS:
            raise ConfigError(f"hf backend option decoder={decoder!r}: expected one of {', '.join(DECODERS)}")
        if prefill_batch < 1:
            raise ConfigError(f"hf backend option prefill_batch={prefill_batch}: expected a positive integer")
        self.prefill_batch = prefill_batch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_dir or self.model_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            str(self.model_dir), dtype=torch_dtype, use_safetensors=None if allow_pickle else True
        )
        self.base: Any = loaded.to(self.device).eval()
        self.greedy_loop = decoder == "harness" and supports_greedy_loop(self.base)
        if self.greedy_loop and self.base.config._attn_implementation == "sdpa":
            register_decode_attention()  # sdpa for prefill; one-query steps without K/V copies
            self.base.set_attn_implementation(DECODE_ATTENTION)
        self.model: Any = self.base
        self.adapter: Path | None = None
        self.allow_pickle = allow_pickle
        self._adapter_names: dict[Path, str] = {}
        eos = self.base.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        self.set_adapter(adapter)

    # -- adapters -------------------------------------------------------------------------------
    def set_adapter(self, adapter: str | Path | None) -> None:
        if adapter is None:
            self.adapter = None
            return
        path = Path(adapter).resolve()
        if path not in self._adapter_names:
            from peft import PeftModel

            check_model_weights(None, path, allow_pickle=self.allow_pickle)  # PEFT would torch.load a .bin

            name = f"a{adapter_hash(path)}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=name)
                self.model.eval()
            self._adapter_names[path] = name
        self.model.set_adapter(self._adapter_names[path])
        self.adapter = path

    @contextlib.contextmanager
    def _active_model(self) -> Iterator[Any]:
        if self.adapter is None and self.model is not self.base:
            with self.model.disable_adapter():  # PEFT wraps the base in place: switch LoRA off
                yield self.model
        else:
            yield self.model

    # -- generation -----------------------------------------------------------------------------
    def _generation_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        from transformers import GenerationConfig as HFGenerationConfig

        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
            if not config.greedy
            else {"do_sample": False}
        )
        gen_config = HFGenerationConfig(
            max_new_tokens=config.max_new_tokens,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            num_return_sequences=config.num_samples,
            **sampling,
        )
        kwargs: dict[str, Any] = {"generation_config": gen_config}
        if config.stop:
            kwargs |= {"stop_strings": list(config.stop), "tokenizer": self.tokenizer}
        return kwargs

    def _decode(self, ids: list[int], config: GenerationConfig, *, padded: bool = True) -> Completion:
        finish: FinishReason = "length"
        end = next((i for i, t in enumerate(ids) if t in self._eos_ids), None)
        if end is not None:
            ids, finish = ids[: end + 1], "stop"
        elif padded:  # generate pads a row stopped early by a stop string
            while ids and ids[-1] == self.tokenizer.pad_token_id:
                ids.pop()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, config.stop)
        if stopped:
            finish = "stop"
        return Completion(text=text, finish_reason=finish, num_tokens=len(ids))

    def _run_greedy(self, prompts: list[str], config: GenerationConfig) -> list[list[Completion]]:
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        stops = config.stop

        def stopped(_: int, tokens: list[int]) -> bool:
            # a stop string can span tokens: check the decoded text of the row so far
            return any(stop in self.tokenizer.decode(tokens, skip_special_tokens=True) for stop in stops)

        with self._active_model() as model:
            decoded = greedy_decode(
                model,
                ids,
                max_new_tokens=config.max_new_tokens,
                eos_ids=self._eos_ids,
                pad_id=self.tokenizer.pad_token_id,
                prefill_batch=self.prefill_batch,
                stopped=stopped if stops else None,
            )
        return [[self._decode(tokens, config, padded=False)] for tokens in decoded]

    @torch.inference_mode()
    def _run(self, prompts: list[str], config: GenerationConfig) -> list[list[Completion]]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self._active_model() as model:
            out = model.generate(**batch, **self._generation_kwargs(config))
        new = out[:, batch["input_ids"].shape[1] :]
        n = config.num_samples
        return [[self._decode(new[i * n + j].tolist(), config) for j in range(n)] for i in range(len(prompts))]

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[list[Completion]]:
        results: list[list[Completion] | None] = [None] * len(prompts)
        if config.greedy and self.greedy_loop:  # the loop sorts by length itself
            for start in range(0, len(prompts), config.batch_size):
                texts = list(prompts[start : start + config.batch_size])
                results[start : start + len(texts)] = self._run_greedy(texts, config)
        elif config.greedy:
            lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
            order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # similar lengths share a batch
            for start in range(0, len(order), config.batch_size):
                chunk = order[start : start + config.batch_size]
                for index, completions in zip(chunk, self._run([prompts[i] for i in chunk], config), strict=True):
                    results[index] = completions
        else:
            for index, prompt in enumerate(prompts):
                torch.manual_seed(prompt_seed(config.seed, prompt))
                results[index] = self._run([prompt], config)[0]
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.model = self.base = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
