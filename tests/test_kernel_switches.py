"""The kernels' on/off environment switches (``kernels.configs.env_switch``): the activation
kernel's and the TMA attention kernel's, read at each call."""

from __future__ import annotations

import pytest
from kernel_modules import K

CFG = K.configs
TC = K.tma_configs

SWITCHES = [
    (CFG.use_activation_kernel, CFG.ACTIVATION_KERNEL_ENV, "USE_ACTIVATION_KERNEL", CFG),
    (TC.use_tma, TC.TMA_ENV, "USE_TMA", TC),
]


@pytest.mark.parametrize("use, env, attr, mod", SWITCHES)
@pytest.mark.parametrize(
    "raw, want",
    [("1", True), ("true", True), (" ON ", True), ("Yes", True),
     ("0", False), ("FALSE", False), ("off", False), ("no", False)],
)  # fmt: skip
def test_switch_values(monkeypatch, use, env, attr, mod, raw, want) -> None:
    for default in (True, False):  # the variable wins over the module default either way
        monkeypatch.setattr(mod, attr, default)
        monkeypatch.setenv(env, raw)
        assert use() is want


@pytest.mark.parametrize("use, env, attr, mod", SWITCHES)
def test_unset_or_empty_gives_the_module_default(monkeypatch, use, env, attr, mod) -> None:
    for default in (True, False):
        monkeypatch.setattr(mod, attr, default)
        monkeypatch.delenv(env, raising=False)
        assert use() is default
        monkeypatch.setenv(env, "")
        assert use() is default


@pytest.mark.parametrize("use, env, attr, mod", SWITCHES)
@pytest.mark.parametrize("raw", ["2", "maybe", "o n"])
def test_other_values_are_refused_naming_the_variable(monkeypatch, use, env, attr, mod, raw):
    monkeypatch.setenv(env, raw)
    with pytest.raises(ValueError) as info:
        use()
    assert env in str(info.value) and repr(raw) in str(info.value)


def test_kernels_run_only_where_the_sm90_cubins_fit(monkeypatch) -> None:
    """CupyContext.use_kernels starts from kernels_fit_device: compute capability 9.0 only
    (the cubins are built for sm_90), remembered per device."""
    import types

    from trtdsl.backends.cupy import backend

    def device_factory(cc: dict[int, str], current: list[int]):
        def device():
            return types.SimpleNamespace(id=current[0], compute_capability=cc[current[0]])

        return device

    monkeypatch.setattr(backend, "_KERNEL_DEVICES", {})
    current = [0]
    cp = types.SimpleNamespace(
        cuda=types.SimpleNamespace(Device=device_factory({0: "90", 1: "80", 2: "100"}, current))
    )
    want = {0: True, 1: False, 2: False}
    for dev in (0, 1, 2, 0, 1):
        current[0] = dev
        assert backend.kernels_fit_device(cp) is want[dev]
    assert backend._KERNEL_DEVICES == want
