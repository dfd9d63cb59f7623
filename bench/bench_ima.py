"""IMA measurement-list replay speed, next to a hashlib-only floor measured in the same run.

Run: ``.venv/bin/python bench/bench_ima.py [COUNT]``; prints one JSON object.  Times are
best-of-N process CPU time, which is steadier than wall time on a shared machine.
``ima_parse_then_replay_100k_s`` is the ImaEntry path (parse_ascii + replay), for contrast.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable

from trusted_launch.evidence import ima

INCREMENTAL_TAIL = 100


def _best(func: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        func()
        best = min(best, time.process_time() - start)
    return best


def _hash_floor(template_data: list[bytes]) -> None:
    """The four hashlib calls per entry that any sha1 + sha256 replay must make."""
    sha1, sha256 = hashlib.sha1, hashlib.sha256
    pcr1, pcr256 = bytes(20), bytes(32)
    for data in template_data:
        digest1 = sha1(data).digest()
        pcr1 = sha1(pcr1 + digest1).digest()
        pcr256 = sha256(pcr256 + sha256(data).digest()).digest()


def run(count: int = 100_000, repeat: int = 3) -> dict:
    """Time full and incremental replay of a synthetic ``count``-entry ima-ng list."""
    data = ima.synthetic_ima_ng_list(count)
    template_data = [entry.template_data for entry in ima.parse_ascii(data)]
    head = data[:len(data) - sum(len(line) + 1 for line in data.splitlines()[-INCREMENTAL_TAIL:])]
    saved = ima.replay_ascii(head)
    full = _best(lambda: ima.replay_ascii(data), repeat)
    floor = _best(lambda: _hash_floor(template_data), repeat)
    incremental = _best(lambda: ima.replay_ascii(data, state=saved), 50 * repeat)
    binary = ima.synthetic_ima_ng_list(count, binary=True)
    full_binary = _best(lambda: ima.replay_binary(binary), repeat)
    entries_path = _best(lambda: ima.replay(ima.parse_ascii(data)), 1)
    return {
        "entries": count,
        "ima_100k_s": round(full * 100_000 / count, 4),
        "ima_hash_floor_100k_s": round(floor * 100_000 / count, 4),
        "ratio_to_floor": round(full / floor, 2),
        "ima_incremental_100_ms": round(incremental * 1000, 3),
        "ima_binary_100k_s": round(full_binary * 100_000 / count, 4),
        "ima_parse_then_replay_100k_s": round(entries_path * 100_000 / count, 4),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), indent=2))
