"""Security profiles as the TTP stores them: validated documents in the database."""

from __future__ import annotations

import json
import os
import pathlib

from oslo_log import log as logging

from trusted_launch.policy import PolicyError, ProfileSet, SecurityProfile, load_profile
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.errors import BadRequest, Conflict, NotFound

LOG = logging.getLogger(__name__)
PROFILE_SUFFIXES = (".yaml", ".yml", ".json")


class ProfileStore:
    """Create, read, replace and delete profiles; build the ProfileSet the verifier uses."""

    def __init__(self, db: TTPDatabase) -> None:
        self.db = db
        self._cached: tuple[int, ProfileSet] | None = None  # (profile revision, set)

    def _stored(self) -> list[SecurityProfile]:
        return [load_profile(json.loads(row.document)) for row in self.db.list_profiles()]

    def profile_set(self) -> ProfileSet:
        """All stored profiles, ordered by level (see :meth:`profile_set_at`)."""
        return self.profile_set_at(self.db.profile_revision())

    def profile_set_at(self, revision: int | None) -> ProfileSet:
        """All stored profiles, given the profile revision the database just reported.

        Reloaded only when the revision moved (a change by any worker); the
        revision is read before the profiles, so a change made in between
        only causes one more reload. None (no revision row): always reloaded.
        """
        cached = self._cached
        if revision is not None and cached is not None and cached[0] == revision:
            return cached[1]
        profiles = ProfileSet(self._stored())
        self._cached = None if revision is None else (revision, profiles)
        return profiles

    def summaries(self) -> list[dict]:
        """Name, level and description of every profile, weakest first."""
        return [{"name": p.name, "level": p.level, "description": p.description}
                for p in self.profile_set()]

    def get(self, name: str) -> dict:
        """The stored document of ``name``, or NotFound."""
        row = self.db.get_profile(name)
        if row is None:
            raise NotFound("profile", f"no security profile named {name[:64]!r}")
        return json.loads(row.document)

    def put(self, name: str, document: object) -> tuple[bool, dict]:
        """Validate and store; (created, stored document). Levels must stay unique."""
        try:
            profile = load_profile(document)  # type: ignore[arg-type]
        except PolicyError as exc:
            raise BadRequest("profile", str(exc)) from exc
        except (TypeError, AttributeError) as exc:
            raise BadRequest("profile", "not a profile document") from exc
        if profile.name != name:
            raise BadRequest("name", f"document names profile {profile.name!r}, "
                                     f"the URL {name[:64]!r}")
        others = [p for p in self._stored() if p.name != name]
        try:
            ProfileSet([*others, profile])
        except PolicyError as exc:
            raise Conflict("profile_level", str(exc)) from exc
        stored = profile.to_document()
        created = self.db.put_profile(name, profile.level, stored)
        LOG.info("security profile %s (level %d) %s", name, profile.level,
                 "created" if created else "replaced")
        return created, stored

    def delete(self, name: str) -> None:
        """Delete ``name``, or NotFound."""
        if not self.db.delete_profile(name):
            raise NotFound("profile", f"no security profile named {name[:64]!r}")
        LOG.info("security profile %s deleted", name)

    def bootstrap(self, directory: str | os.PathLike) -> list[str]:
        """Store the documents in ``directory`` whose profile is not in the database yet."""
        added = []
        for path in sorted(pathlib.Path(directory).iterdir()):
            if path.suffix not in PROFILE_SUFFIXES:
                continue
            profile = load_profile(path.read_bytes())
            if self.db.get_profile(profile.name) is None:
                self.put(profile.name, profile.to_document())
                added.append(profile.name)
        return added
