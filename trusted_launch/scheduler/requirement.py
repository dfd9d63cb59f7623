"""Which security profile a scheduling request asks for.

A request may name a profile in four places; every place that names one is
read, and the request must be met by a host that satisfies ALL of them, i.e.
the strictest profile named wins (fail closed: no source can weaken another):

1. scheduler hint ``trusted_sp`` (``openstack server create --hint
   trusted_sp=high``); Nova's hint schema allows extra keys, and the
   RequestSpec keeps hints across moves;
2. flavor extra spec ``trusted_launch:sp`` (checked by our extra-spec
   validator), and flavor extra specs ``trait[GROUP]:CUSTOM_TRUSTED_SP_<NAME>
   =required``;
3. image property ``trait:CUSTOM_TRUSTED_SP_<NAME>=required``. Nova's
   ImageMetaProps drops unknown properties such as ``trusted_sp`` but keeps
   ``trait:*`` as ``traits_required``, so the image's profile reaches the
   filter inside the RequestSpec with no image-service call. The same trait
   also lets placement pre-filter hosts once computes report it;
4. server metadata ``trusted_sp`` (``--property trusted_sp=high``). The
   RequestSpec has no metadata, so it is read once per request: from the
   BuildRequest (API database) while the server is first scheduled, and from
   the instance in its cell database on later moves (migrate, live-migrate,
   evacuate, unshelve). Disabled by ``profile_from_server_metadata=False``.

A malformed or unconfigured profile name in any source makes the request
unsatisfiable (no host passes) rather than being ignored; so does metadata
that cannot be read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from trusted_launch.scheduler.levels import PROFILE_NAME_PATTERN, TRAIT_PREFIX, ProfileLevels

HINT_KEY = "trusted_sp"
EXTRA_SPEC_KEY = "trusted_launch:sp"
METADATA_KEY = "trusted_sp"

_NAME_RE = re.compile(PROFILE_NAME_PATTERN)
_FLAVOR_TRAIT_RE = re.compile(r"trait[a-zA-Z0-9_-]{0,64}:(" + TRAIT_PREFIX + r"[A-Z0-9_]+)")

MetadataReader = Callable[[Any], Mapping[str, str]]


class ProfileRequestError(ValueError):
    """The requested security profile cannot be determined or met."""


class InvalidProfileRequest(ProfileRequestError):
    """A source names a profile in a malformed way."""


class UnknownProfile(ProfileRequestError):
    """A source names a profile that is not configured."""


class ProfileLookupError(ProfileRequestError):
    """The server metadata needed to find the profile could not be read."""


@dataclasses.dataclass(frozen=True)
class ProfileRequest:
    """One source's request: where it came from and the profile it names."""

    source: str
    profile: str


@dataclasses.dataclass(frozen=True)
class Requirement:
    """The strictest profile a request asks for, and who asked for it."""

    profile: str
    rank: int
    sources: tuple[str, ...]


def _field(obj: Any, name: str) -> Any:
    """A Nova object's field, or None if unset (never lazy-loads)."""
    if obj is None or name not in obj:
        return None
    return getattr(obj, name)


def _describe(value: object) -> str:
    return repr(value)[:48]


def _hint_requests(spec_obj: Any) -> Iterator[ProfileRequest]:
    hints = _field(spec_obj, "scheduler_hints") or {}
    values = hints.get(HINT_KEY)
    if values is None:
        return
    for value in values if isinstance(values, list) else [values]:
        yield ProfileRequest(f"scheduler hint {HINT_KEY}", value)


def _flavor_requests(spec_obj: Any, levels: ProfileLevels) -> Iterator[ProfileRequest]:
    extra_specs = _field(_field(spec_obj, "flavor"), "extra_specs") or {}
    if EXTRA_SPEC_KEY in extra_specs:
        yield ProfileRequest(f"flavor extra spec {EXTRA_SPEC_KEY}", extra_specs[EXTRA_SPEC_KEY])
    for key, value in extra_specs.items():
        match = _FLAVOR_TRAIT_RE.fullmatch(key)
        if match and value == "required":
            yield _trait_request(f"flavor extra spec {key}", match.group(1), levels)


def _image_requests(spec_obj: Any, levels: ProfileLevels) -> Iterator[ProfileRequest]:
    properties = _field(_field(spec_obj, "image"), "properties")
    for trait in _field(properties, "traits_required") or ():
        if trait.startswith(TRAIT_PREFIX):
            yield _trait_request(f"image property trait:{trait}", trait, levels)


def _trait_request(source: str, trait: str, levels: ProfileLevels) -> ProfileRequest:
    level = levels.level_for_trait(trait)
    if level is None:
        raise UnknownProfile(f"{source} names trait {trait}, which is no configured profile")
    return ProfileRequest(source, level)


def _metadata_requests(spec_obj: Any, reader: MetadataReader) -> Iterator[ProfileRequest]:
    metadata = reader(spec_obj)
    if METADATA_KEY in metadata:
        yield ProfileRequest(f"server metadata {METADATA_KEY}", metadata[METADATA_KEY])


def profile_requests(spec_obj: Any, levels: ProfileLevels,
                     metadata_reader: MetadataReader | None = None) -> list[ProfileRequest]:
    """Every profile that a RequestSpec (and the server's metadata) names."""
    requests = [*_hint_requests(spec_obj), *_flavor_requests(spec_obj, levels),
                *_image_requests(spec_obj, levels)]
    if metadata_reader is not None:
        requests.extend(_metadata_requests(spec_obj, metadata_reader))
    return requests


def _rank(request: ProfileRequest, levels: ProfileLevels) -> int:
    if not isinstance(request.profile, str) or not _NAME_RE.fullmatch(request.profile):
        raise InvalidProfileRequest(
            f"{request.source} is {_describe(request.profile)}, "
            f"not a profile name matching {PROFILE_NAME_PATTERN}")
    rank = levels.rank(request.profile)
    if rank is None:
        raise UnknownProfile(
            f"{request.source} asks for profile {request.profile!r}, which is not one of "
            f"the configured profiles {', '.join(levels.names)}")
    return rank


def resolve(spec_obj: Any, levels: ProfileLevels,
            metadata_reader: MetadataReader | None = None) -> Requirement | None:
    """The strictest profile requested, or None if no source names one.

    Raises a :class:`ProfileRequestError` subclass when a request cannot be
    met or read; callers must then pass no host.
    """
    requests = profile_requests(spec_obj, levels, metadata_reader)
    if not requests:
        return None
    ranked = [(_rank(request, levels), request) for request in requests]
    top = max(rank for rank, _ in ranked)
    sources = tuple(request.source for rank, request in ranked if rank == top)
    return Requirement(levels.names[top], top, sources)


def read_server_metadata(spec_obj: Any) -> Mapping[str, str]:
    """The server's metadata, read once from the API or cell database.

    While a new server is being scheduled it exists only as a BuildRequest;
    once placed, it lives in a cell database that the instance mapping names.
    """
    from nova import context as nova_context
    from nova import exception, objects

    context = getattr(spec_obj, "_context", None)
    instance_uuid = _field(spec_obj, "instance_uuid")
    if context is None or instance_uuid is None:
        raise ProfileLookupError("the request has no context or instance uuid to "
                                 "read server metadata with")
    context = context.elevated()
    try:
        mapping = objects.InstanceMapping.get_by_instance_uuid(context, instance_uuid)
        cell = _field(mapping, "cell_mapping")
        if cell is None:
            build_request = objects.BuildRequest.get_by_instance_uuid(context, instance_uuid)
            return dict(build_request.instance.metadata or {})
        with nova_context.target_cell(context, cell) as cell_context:
            instance = objects.Instance.get_by_uuid(
                cell_context, instance_uuid, expected_attrs=["metadata"])
        return dict(instance.metadata or {})
    except exception.NovaException as exc:
        raise ProfileLookupError(
            f"cannot read metadata of server {instance_uuid}: {type(exc).__name__}") from exc
