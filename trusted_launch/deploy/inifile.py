"""A line-preserving INI editor: set or add one option without rewriting the rest.

configparser drops comments and collapses repeated keys (oslo.config's
MultiStrOpt, e.g. nova's ``[filter_scheduler] available_filters``), so an
operator's file is edited line by line instead, the way DevStack's
``iniset``/``iniadd`` do.
"""

from __future__ import annotations

import os
import pathlib
import re

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_OPTION = re.compile(r"^\s*([^#;=\s][^=]*?)\s*=\s*(.*?)\s*$")


class IniFile:
    """The lines of one INI file, edited in memory and written back atomically."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path.exists() else []

    def _section_bounds(self, section: str) -> tuple[int, int] | None:
        start = None
        for index, line in enumerate(self.lines):
            match = _SECTION.match(line)
            if match and start is not None:
                return start, index
            if match and match.group(1).strip() == section:
                start = index + 1
        return None if start is None else (start, len(self.lines))

    def _option_lines(self, section: str, key: str) -> list[int]:
        bounds = self._section_bounds(section)
        if bounds is None:
            return []
        return [index for index in range(*bounds)
                if (match := _OPTION.match(self.lines[index])) and match.group(1) == key]

    def get_all(self, section: str, key: str) -> list[str]:
        """Every value of ``key`` in ``section``, in file order."""
        return [_OPTION.match(self.lines[index]).group(2)
                for index in self._option_lines(section, key)]

    def get(self, section: str, key: str) -> str | None:
        """The last value of ``key`` (the one oslo.config uses), or None."""
        values = self.get_all(section, key)
        return values[-1] if values else None

    def set(self, section: str, key: str, value: str) -> None:
        """``key = value`` as the only value of ``key`` in ``section``."""
        indices = self._option_lines(section, key)
        if indices:
            self.lines[indices[0]] = f"{key} = {value}"
            for index in reversed(indices[1:]):
                del self.lines[index]
            return
        self._append(section, f"{key} = {value}")

    def add(self, section: str, key: str, value: str) -> None:
        """One more ``key = value`` line (a multi-valued option), unless already there."""
        if value not in self.get_all(section, key):
            self._append(section, f"{key} = {value}")

    def _append(self, section: str, line: str) -> None:
        bounds = self._section_bounds(section)
        if bounds is None:
            if self.lines and self.lines[-1].strip():
                self.lines.append("")
            self.lines += [f"[{section}]", line]
            return
        end = bounds[1]
        while end > bounds[0] and not self.lines[end - 1].strip():
            end -= 1
        self.lines.insert(end, line)

    def write(self) -> None:
        """Replace the file atomically (a temporary file in the same directory, then rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o640
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as fileobj:
            fileobj.write("\n".join(self.lines) + "\n")
        os.replace(temporary, self.path)
