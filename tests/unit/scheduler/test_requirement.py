"""Finding the requested profile in real RequestSpec objects."""

from __future__ import annotations

import pytest

from tests.unit.scheduler.helpers import request_spec
from trusted_launch.scheduler import requirement
from trusted_launch.scheduler.levels import ProfileLevels
from trusted_launch.scheduler.requirement import (
    InvalidProfileRequest,
    ProfileLookupError,
    Requirement,
    UnknownProfile,
    resolve,
)

LEVELS = ProfileLevels(("low", "medium", "high"))


def metadata(**values: str):
    return lambda spec: values


def test_no_source_means_no_requirement() -> None:
    assert resolve(request_spec(hints={"other": "x"}, extra_specs={"hw:cpu": "1"}),
                   LEVELS, metadata(owner="me")) is None


def test_scheduler_hint() -> None:
    assert resolve(request_spec(hints={"trusted_sp": "high"}), LEVELS) == Requirement(
        "high", 2, ("scheduler hint trusted_sp",))


def test_flavor_extra_spec() -> None:
    got = resolve(request_spec(extra_specs={"trusted_launch:sp": "medium"}), LEVELS)
    assert (got.profile, got.sources) == ("medium", ("flavor extra spec trusted_launch:sp",))


@pytest.mark.parametrize("key", ["trait:CUSTOM_TRUSTED_SP_HIGH", "trait1:CUSTOM_TRUSTED_SP_HIGH"])
def test_flavor_required_trait(key) -> None:
    assert resolve(request_spec(extra_specs={key: "required"}), LEVELS).profile == "high"


def test_flavor_forbidden_trait_is_no_request() -> None:
    spec = request_spec(extra_specs={"trait:CUSTOM_TRUSTED_SP_HIGH": "forbidden"})
    assert resolve(spec, LEVELS) is None


def test_image_trait_survives_image_meta_parsing() -> None:
    spec = request_spec(image_properties={"trait:CUSTOM_TRUSTED_SP_MEDIUM": "required",
                                          "trusted_sp": "dropped-by-nova"})
    got = resolve(spec, LEVELS)
    assert (got.profile, got.sources) == (
        "medium", ("image property trait:CUSTOM_TRUSTED_SP_MEDIUM",))


def test_server_metadata() -> None:
    got = resolve(request_spec(), LEVELS, metadata(trusted_sp="low"))
    assert (got.profile, got.rank) == ("low", 0)


def test_metadata_ignored_without_reader() -> None:
    assert resolve(request_spec(), LEVELS, None) is None


def test_strictest_source_wins_and_all_its_sources_are_named() -> None:
    spec = request_spec(hints={"trusted_sp": "high"},
                        extra_specs={"trusted_launch:sp": "low"},
                        image_properties={"trait:CUSTOM_TRUSTED_SP_HIGH": "required"})
    got = resolve(spec, LEVELS, metadata(trusted_sp="medium"))
    assert got.profile == "high"
    assert got.sources == ("scheduler hint trusted_sp",
                           "image property trait:CUSTOM_TRUSTED_SP_HIGH")


def test_several_hint_values_take_the_strictest() -> None:
    spec = request_spec(hints={"trusted_sp": ["low", "medium"]})
    assert resolve(spec, LEVELS).profile == "medium"


def test_unknown_profile_names_its_source() -> None:
    with pytest.raises(UnknownProfile, match=r"server metadata trusted_sp .*'ultra'"):
        resolve(request_spec(), LEVELS, metadata(trusted_sp="ultra"))


def test_unknown_profile_anywhere_beats_a_known_one() -> None:
    spec = request_spec(hints={"trusted_sp": "high"}, extra_specs={"trusted_launch:sp": "gold"})
    with pytest.raises(UnknownProfile, match="flavor extra spec"):
        resolve(spec, LEVELS)


def test_unknown_trait_is_unknown_profile() -> None:
    spec = request_spec(image_properties={"trait:CUSTOM_TRUSTED_SP_ULTRA": "required"})
    with pytest.raises(UnknownProfile, match="CUSTOM_TRUSTED_SP_ULTRA"):
        resolve(spec, LEVELS)


@pytest.mark.parametrize("value", ["HIGH", "", "high ", "x" * 33, "hi;gh", "h\u00efgh"])
def test_malformed_profile_is_refused(value) -> None:
    with pytest.raises(InvalidProfileRequest, match="scheduler hint trusted_sp"):
        resolve(request_spec(hints={"trusted_sp": [value]}), LEVELS)


@pytest.mark.parametrize("value", [5, None, ["high"]])
def test_non_string_profile_is_refused(value) -> None:
    with pytest.raises(InvalidProfileRequest, match="server metadata trusted_sp"):
        resolve(request_spec(), LEVELS, lambda spec: {"trusted_sp": value})


def test_long_malformed_value_is_truncated_in_message() -> None:
    with pytest.raises(InvalidProfileRequest) as error:
        resolve(request_spec(), LEVELS, metadata(trusted_sp="A" * 5000))
    assert len(str(error.value)) < 200


def test_metadata_reader_failure_propagates() -> None:
    def broken(spec):
        raise ProfileLookupError("cannot read")

    with pytest.raises(ProfileLookupError):
        resolve(request_spec(), LEVELS, broken)


def test_read_server_metadata_needs_context_and_uuid() -> None:
    spec = request_spec()
    with pytest.raises(ProfileLookupError, match="no context or instance uuid"):
        requirement.read_server_metadata(spec)
