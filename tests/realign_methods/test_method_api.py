"""The method API: names stated once, typed roles, function methods, and the registry's checks."""

from __future__ import annotations

from typing import Annotated

import pytest
import torch
from pydantic import Field

from harness.core.errors import ConfigError
from harness.core.registry import Registry
from realign_methods import (
    METHODS,
    Method,
    MethodInfo,
    Role,
    TensorContext,
    TensorInputs,
    check_method,
    get_method,
    register_method,
    tensor_method,
)


def test_roles_are_typed_and_strings_are_normalised() -> None:
    info = MethodInfo(
        name="x", summary="s", required=frozenset({"aligned"}), one_of=(frozenset({"finetuned", Role.ADAPTERS}),)
    )  # type: ignore[arg-type]  # strings on purpose
    assert info.required == {Role.ALIGNED}
    assert all(isinstance(role, Role) for group in info.one_of for role in group)
    assert Role.ALIGNED == "aligned" and {"aligned": 1}[Role.ALIGNED] == 1
    with pytest.raises(ConfigError, match=r"method 'x': unknown input kind\(s\) \['fine_tuned'\] in required"):
        MethodInfo(name="x", summary="s", required=frozenset({"fine_tuned"}))  # type: ignore[arg-type]


def test_builtin_names_come_from_info() -> None:
    for name in METHODS.names():
        assert get_method(name).info.name == name
    assert "realign_methods.methods.resta" in METHODS.source("resta")


def test_tensor_method_parameters_come_from_the_signature() -> None:
    info = MethodInfo(
        name="_api_scaled_sum",
        summary="aligned + k·(finetuned − aligned)",
        required=frozenset({Role.ALIGNED, Role.FINETUNED}),
    )

    @tensor_method(info)
    def scaled(
        inputs: TensorInputs, ctx: TensorContext, *, k: Annotated[float, Field(ge=0.0, le=2.0)] = 0.5
    ) -> torch.Tensor:
        return inputs.aligned + k * (inputs.finetuned() - inputs.aligned)

    try:
        method = get_method("_api_scaled_sum")
        params = method.validate({"k": 2.0})
        a, f = torch.zeros(3), torch.ones(3)
        out = method.merge_tensor(
            TensorInputs.from_tensors("w", {"aligned": a, "finetuned": f}), params, TensorContext("w", 0)
        )
        assert torch.equal(out, torch.full((3,), 2.0))
        assert method.validate({}).model_dump() == {"k": 0.5}
        with pytest.raises(ConfigError, match=r"parameter 'k' = 3.0.*allowed: 0.0 <= k <= 2.0"):
            method.validate({"k": 3.0})
    finally:
        METHODS._items.pop("_api_scaled_sum")  # keep the process-wide registry as the built-ins left it


def test_check_method_refuses_what_is_not_a_method() -> None:
    class Named(Method):
        info = MethodInfo(name="one", summary="s")

        def merge_tensor(self, inputs: TensorInputs, params: object, ctx: TensorContext) -> torch.Tensor:
            return inputs.raw("aligned")

    class OldSignature(Method):
        info = MethodInfo(name="old", summary="s")

        def merge_tensor(self, name: str, inputs: TensorInputs, params: object, ctx: TensorContext) -> torch.Tensor:  # type: ignore[override]
            return inputs.raw("aligned")

    assert check_method("one", Named) is Named
    with pytest.raises(ConfigError, match=r"expected a subclass of realign_methods\.Method"):
        check_method("f", lambda: None)
    with pytest.raises(ConfigError, match=r"registered as 'two' but its info\.name is 'one'"):
        check_method("two", Named)
    with pytest.raises(ConfigError, match=r"merge_tensor takes \['name', 'inputs', 'params', 'ctx'\].*ctx.name"):
        check_method("old", OldSignature)
    with pytest.raises(ConfigError, match="not @register_method\\('name'\\)"):
        register_method()("resta")  # type: ignore[arg-type]


def test_registry_conflict_names_both_sources() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1, source="first.py")
    with pytest.raises(
        ConfigError, match=r"'a' is already registered by first\.py; refusing the second registration from second\.py"
    ):
        registry.add("a", 2, source="second.py")

    def only_ints(name: str, item: object) -> int:
        if not isinstance(item, int):
            raise ConfigError(f"thing {name!r}: expected an int, got {item!r}")
        return item

    checked: Registry[int] = Registry("thing", check=only_ints)
    with pytest.raises(ConfigError, match="thing 'b': expected an int, got 'x'"):
        checked.add("b", "x")  # type: ignore[arg-type]
    assert "b" not in checked
