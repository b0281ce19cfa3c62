"""Judges: turn saved generations into verdicts (harmful/harmless, refusal, or pairwise win/loss/draw).

Built in: ``refusal`` (GCG / HarmBench keyword lists), ``offline`` (the default; packaged MiniLM +
a head trained on PKU-SafeRLHF), ``llm`` / ``harmbench-cls`` / ``llamaguard3`` / ``wildguard``
(classifiers through vLLM, from local weights) and ``api`` (OpenAI-compatible endpoint with RESTA's
or SOMF's prompt). Third-party judges register through the ``realign.judges`` entry-point group.
"""

from benchmarks.judges import _api as _api
from benchmarks.judges import _llm as _llm
from benchmarks.judges import _multilingual as _multilingual
from benchmarks.judges import _offline as _offline
from benchmarks.judges import _refusal as _refusal
from benchmarks.judges._api import ApiJudge
from benchmarks.judges._base import (
    JUDGES,
    BaseJudge,
    EndpointError,
    Judge,
    JudgeOptions,
    PairwiseJudge,
    ProbabilityJudge,
    cached_judge,
    clear_judge_cache,
    get_judge,
    get_judge_class,
    list_judges,
    match_pairs,
)
from benchmarks.judges._cards import (
    JudgeCard,
    corrected_rate,
    find_card,
    load_card,
    load_labels,
    rogan_gladen,
    validate_judge,
)
from benchmarks.judges._llm import LLMJudge
from benchmarks.judges._multilingual import MultilingualOfflineJudge, train_multilingual_judge
from benchmarks.judges._offline import (
    OfflineJudge,
    TrainedOfflineJudge,
    binary_metrics,
    heldout_examples,
    load_pku_labels,
    train_offline_judge,
)
from benchmarks.judges._refusal import RefusalJudge
from benchmarks.judges._refusal_lists import REFUSAL_LISTS, RefusalList
from benchmarks.judges._serve import ChatServer, make_server

DEFAULT_JUDGE = "offline-multilingual"  # the English-only MiniLM judge stays available as "offline"

__all__ = [
    "DEFAULT_JUDGE",
    "JUDGES",
    "REFUSAL_LISTS",
    "ApiJudge",
    "BaseJudge",
    "ChatServer",
    "EndpointError",
    "Judge",
    "JudgeCard",
    "JudgeOptions",
    "LLMJudge",
    "MultilingualOfflineJudge",
    "OfflineJudge",
    "PairwiseJudge",
    "ProbabilityJudge",
    "RefusalJudge",
    "RefusalList",
    "TrainedOfflineJudge",
    "binary_metrics",
    "cached_judge",
    "clear_judge_cache",
    "corrected_rate",
    "find_card",
    "get_judge",
    "get_judge_class",
    "heldout_examples",
    "list_judges",
    "load_card",
    "load_labels",
    "load_pku_labels",
    "make_server",
    "match_pairs",
    "rogan_gladen",
    "train_multilingual_judge",
    "train_offline_judge",
    "validate_judge",
]
