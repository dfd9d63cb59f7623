"""The driver-swap plugin's correction of ``fixtures.MonkeyPatch`` for subclasses."""

from __future__ import annotations

from unittest import mock

import fixtures
import pytest
from fixtures._fixtures import monkeypatch as monkeypatch_module

from tests.nova_unit.driver_swap import _see_inherited


class Base:
    @staticmethod
    def make(target, size):
        return ("real", target, size)

    def use(self):
        return self.make(target="t", size=1)


class Sub(Base):
    pass


def _patch_sub_and_call():
    fake = mock.create_autospec(Base.make, return_value="fake")  # as Nova's fixtures do
    with fixtures.MonkeyPatch(f"{__name__}.Sub.make", fake):
        during = Sub().use()
    return during, fake, "make" in Sub.__dict__


def test_unpatched_fixture_binds_an_inherited_staticmethod_and_leaves_it_behind() -> None:
    try:
        with pytest.raises(TypeError, match="multiple values for argument 'target'"):
            _patch_sub_and_call()  # the patch is handed self as ``target``
        assert "make" in Sub.__dict__  # and the plain function stays in Sub, a method now
        with pytest.raises(TypeError, match="multiple values for argument 'target'"):
            Sub().use()
    finally:
        if "make" in Sub.__dict__:
            del Sub.make


def test_corrected_fixture_keeps_the_staticmethod_and_restores_inheritance() -> None:
    with mock.patch.object(monkeypatch_module, "_coerce_values",
                           _see_inherited(monkeypatch_module._coerce_values)):
        during, fake, left_behind = _patch_sub_and_call()
    assert during == "fake"
    fake.assert_called_once_with("t", 1)
    assert not left_behind and Sub().use() == ("real", "t", 1)
