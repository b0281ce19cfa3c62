"""Reference rows and adapter hand-off are declared on MethodInfo, so the planner needs no method names."""

from __future__ import annotations

import pytest

from harness.core.errors import ConfigError
from harness.core.roles import REFERENCE_ORDER, ReferenceRole
from harness.experiment._plan import ORIGINAL_INFO
from realign_methods import AdapterParams, MethodInfo, MethodParams, get_method, list_methods


class _Params(MethodParams):
    setting: str = "dense"


def test_adapter_params_must_name_parameters_of_the_method() -> None:
    with pytest.raises(ConfigError, match=r"method 'demo': adapter_params name \['mode'\].*parameters: setting"):
        MethodInfo(name="demo", summary="-", params=_Params, adapter_params=AdapterParams(setting="mode"))
    info = MethodInfo(
        name="demo",
        summary="-",
        params=_Params,
        adapter_params=AdapterParams(setting="setting", adapter_values=frozenset({"lora"})),
    )
    assert info.adapter_params.names() == ("setting",)


def test_reference_role_is_normalised_and_refused_when_unknown() -> None:
    assert MethodInfo(name="demo", summary="-", reference_role="aligned").reference_role is ReferenceRole.ALIGNED  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"method 'demo': reference_role 'sft' is not one of original, aligned, finetuned"
    ):
        MethodInfo(name="demo", summary="-", reference_role="sft")  # type: ignore[arg-type]


def test_builtin_declarations() -> None:
    roles = {info.name: info.reference_role for info in list_methods() if info.reference_role}
    assert roles == {"sft": ReferenceRole.FINETUNED, "aligned": ReferenceRole.ALIGNED}
    assert ORIGINAL_INFO.reference_role is ReferenceRole.ORIGINAL and not ORIGINAL_INFO.trains
    assert REFERENCE_ORDER == (ReferenceRole.ORIGINAL, ReferenceRole.ALIGNED, ReferenceRole.FINETUNED)
    assert get_method("somf").info.trains and not get_method("resta").info.trains
    assert get_method("somf").info.adapter_params.setting == "setting"
    assert get_method("somf").info.adapter_params.aligned_adapter == "aligned_adapter"
    assert get_method("safe_lora").info.adapter_params.aligned_adapter == "aligned_adapter"
    # every method with an aligned_adapter parameter declares it, so the planner fills it in
    for info in list_methods():
        if "aligned_adapter" in info.params.model_fields:
            assert info.adapter_params.aligned_adapter == "aligned_adapter", info.name
