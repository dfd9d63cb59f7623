"""Trusted or plain, decided from what Nova loaded on the instance (no lazy loads)."""

from __future__ import annotations

import pytest
from nova import objects

from trusted_launch.compute.launch_request import (
    LaunchRequestInvalid,
    instance_launch_request,
)
from trusted_launch.compute.relaunch import COMMITMENT_KEY

objects.register_all()
UUID = "4b0a2c1e-7f43-4c9a-9d7e-2a3b5c6d7e8f"
TRUSTED = {"trusted_token": "tok3n", "trusted_ttp": "https://ttp.example:9443",
           "trusted_sp": "high"}


def instance(**fields) -> objects.Instance:
    """A real Nova Instance without a context: reading an unloaded field raises."""
    return objects.Instance(uuid=UUID, **fields)


def test_plain_instance_without_metadata_loaded_is_plain_and_nothing_is_loaded() -> None:
    plain = instance(system_metadata={"image_base_image_ref": "x"})
    assert instance_launch_request(plain) is None
    assert not plain.obj_attr_is_set("metadata")


def test_loaded_metadata_decides() -> None:
    assert instance_launch_request(instance(metadata={}, system_metadata={})) is None
    request = instance_launch_request(instance(metadata=dict(TRUSTED), system_metadata={}))
    assert (request.ttp_url, request.profile) == ("https://ttp.example:9443", "high")


def test_incomplete_properties_are_refused() -> None:
    with pytest.raises(LaunchRequestInvalid, match="trusted_ttp is missing"):
        instance_launch_request(instance(metadata={"trusted_token": "t"}, system_metadata={}))


def test_trusted_instance_whose_metadata_cannot_be_loaded_is_refused() -> None:
    launched = instance(system_metadata={COMMITMENT_KEY: "ab" * 32})
    with pytest.raises(LaunchRequestInvalid, match="cannot be loaded: OrphanedObjectError"):
        instance_launch_request(launched)


def test_trusted_instance_that_lost_its_properties_is_refused() -> None:
    launched = instance(metadata={"trusted_sp": "high"},
                        system_metadata={COMMITMENT_KEY: "ab" * 32})
    with pytest.raises(LaunchRequestInvalid, match=r"launched trusted .* are gone"):
        instance_launch_request(launched)


def test_trusted_instance_with_its_properties_is_trusted() -> None:
    launched = instance(metadata=dict(TRUSTED), system_metadata={COMMITMENT_KEY: "ab" * 32})
    assert instance_launch_request(launched).ttp_url == TRUSTED["trusted_ttp"]
