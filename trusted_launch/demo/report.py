"""Scenario results and their text / JSON rendering."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

ACCEPTED = "accepted"
REFUSED = "refused"


@dataclass
class ScenarioResult:
    """One demonstrated outcome: what was expected, what happened, and why."""

    name: str
    expected: str
    outcome: str = ""
    reason: str = ""
    duration_ms: float = 0.0
    steps_ms: dict[str, float] = field(default_factory=dict)

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.expected

    def to_json(self) -> dict:
        data = asdict(self)
        data["duration_ms"] = round(self.duration_ms, 2)
        data["steps_ms"] = {k: round(v, 2) for k, v in self.steps_ms.items()}
        return data


class Recorder:
    """Collects scenario results; ``scenario()`` times one and catches its refusal."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.results: list[ScenarioResult] = []
        self._echo = echo

    @contextlib.contextmanager
    def scenario(self, name: str, expected: str) -> Iterator[ScenarioResult]:
        result = ScenarioResult(name=name, expected=expected)
        started = time.perf_counter()
        try:
            yield result
        except Exception as exc:
            result.outcome = REFUSED
            result.reason = result.reason or str(exc)
        else:
            result.outcome = result.outcome or ACCEPTED
        result.duration_ms = (time.perf_counter() - started) * 1000
        self.add(result)

    def add(self, result: ScenarioResult) -> None:
        """Record a result measured elsewhere (another process)."""
        self.results.append(result)
        if self._echo:
            self._echo(render_line(result))

    @property
    def all_as_expected(self) -> bool:
        return all(r.as_expected for r in self.results)


def render_line(result: ScenarioResult) -> str:
    mark = "ok  " if result.as_expected else "FAIL"
    line = (f"[{mark}] {result.name:<44} expected {result.expected:<8} "
            f"got {result.outcome:<8} {result.duration_ms:8.1f} ms")
    if result.reason:
        line += f"\n         reason: {result.reason}"
    if result.steps_ms:
        steps = ", ".join(f"{k} {v:.1f} ms" for k, v in result.steps_ms.items())
        line += f"\n         steps:  {steps}"
    return line
