"""Checkpoint I/O: lazy safetensors reading, streaming sharded writing, PEFT LoRA adapters, GGUF import."""

from harness.core.checkpoints._adapted import (
    AdaptedReader,
    CombinedAdapter,
    adapter_base_path,
    join_lora_factors,
    open_model,
)
from harness.core.checkpoints._atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from harness.core.checkpoints._finite import NonFiniteError, check_checkpoint_finite, check_finite
from harness.core.checkpoints._gguf import (
    BUNDLED_GGUF,
    checkpoint_hash,
    find_bundled_gguf,
    import_gguf,
    resolve_model,
)
from harness.core.checkpoints._lora import LoraAdapter, LoraModule, lora_delta, merge_adapter, save_adapter
from harness.core.checkpoints._reader import CheckpointReader, is_adapter_dir, is_weight_file
from harness.core.checkpoints._writer import PROVENANCE_FILE, CheckpointWriter, copy_aux_files, parse_size

__all__ = [
    "BUNDLED_GGUF",
    "PROVENANCE_FILE",
    "AdaptedReader",
    "CheckpointReader",
    "CheckpointWriter",
    "CombinedAdapter",
    "LoraAdapter",
    "LoraModule",
    "NonFiniteError",
    "adapter_base_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_checkpoint_finite",
    "check_finite",
    "checkpoint_hash",
    "copy_aux_files",
    "find_bundled_gguf",
    "import_gguf",
    "is_adapter_dir",
    "is_weight_file",
    "join_lora_factors",
    "lora_delta",
    "merge_adapter",
    "open_model",
    "parse_size",
    "resolve_model",
    "save_adapter",
]
