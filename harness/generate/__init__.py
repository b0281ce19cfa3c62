"""Generation backends (vllm, hf, dummy) and benchmark items -> generations.jsonl.

backend = get_backend("hf", model_dir)            # or "vllm", "dummy"
generate_items(model_dir, items, backend=backend, config=GenerationConfig(), out_path="gen.jsonl")
"""

from harness.generate._adapter import adapter_hash, adapter_rank
from harness.generate._backend import BACKENDS, Backend, get_backend
from harness.generate._config import Completion, GenerationConfig
from harness.generate._items import GenerationFile, build_prompt, generate_files, generate_items, model_hash
from harness.generate._weights import check_model_weights

__all__ = [
    "BACKENDS",
    "Backend",
    "Completion",
    "GenerationConfig",
    "GenerationFile",
    "adapter_hash",
    "adapter_rank",
    "build_prompt",
    "check_model_weights",
    "generate_files",
    "generate_items",
    "get_backend",
    "model_hash",
]
