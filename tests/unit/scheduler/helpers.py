"""Builders of real Nova objects for the scheduler unit tests."""

from __future__ import annotations

from nova import objects
from nova.tests.unit.scheduler import fakes


def request_spec(*, hints: dict | None = None, extra_specs: dict | None = None,
                 image_properties: dict | None = None) -> objects.RequestSpec:
    """A RequestSpec as the scheduler receives it, with the given sources set."""
    flavor = objects.Flavor(name="m1.test", memory_mb=512, vcpus=1, root_gb=1,
                            ephemeral_gb=0, swap=0, extra_specs=extra_specs or {})
    image = objects.ImageMeta.from_dict({"properties": image_properties or {}})
    spec = objects.RequestSpec(flavor=flavor, image=image, num_instances=1,
                               instance_uuid="4f7a3b1c-0000-4000-8000-000000000001")
    spec.scheduler_hints = {key: [value] if isinstance(value, str) else value
                            for key, value in (hints or {}).items()}
    return spec


def aggregate(agg_id: int, **metadata: str) -> objects.Aggregate:
    return objects.Aggregate(id=agg_id, name=f"agg{agg_id}", hosts=[], metadata=metadata)


def host(name: str, *aggregates: objects.Aggregate) -> fakes.FakeHostState:
    return fakes.FakeHostState(name, name, {"aggregates": list(aggregates)})
