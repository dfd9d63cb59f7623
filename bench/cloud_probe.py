"""Wait until a guest answers over the tenant network; run inside the tenant namespace.

``bench_cloud`` starts this with ``ip netns exec <namespace>`` as soon as a
server is ACTIVE and reads one JSON line: ``{"at": <epoch seconds>, "how":
...}`` once the guest answered, ``{"at": null, ...}`` at the deadline.

* ``challenge ADDRESS:PORT SERVER_ID NONCE_FILE DEADLINE``: the tenant's real
  challenge with N (:func:`trusted_launch.client.challenge.verify_vm`, what
  ``openstack trusted server verify`` runs); answered once the agent proves N.
* ``port ADDRESS PORT DEADLINE``: the guest's TCP stack answers on the agent's
  port: the agent accepts, or the guest refuses (a reset: the address is up and
  nothing listens; the image runs its agent only when the config drive holds an
  N, so plain servers refuse).
"""

from __future__ import annotations

import json
import socket
import sys
import time

RETRY_S = 0.1
CONNECT_TIMEOUT_S = 2.0


def _challenge(address: str, server_id: str, nonce_file: str, deadline: float) -> dict:
    from trusted_launch.client.challenge import verify_vm
    from trusted_launch.client.nonce_store import load_nonce

    nonce = load_nonce(nonce_file)
    last = "no attempt"
    while time.time() < deadline:
        try:
            verify_vm(address, server_id, nonce, timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:  # still booting: connection refused, timeouts
            last = type(exc).__name__
            time.sleep(RETRY_S)
            continue
        return {"at": time.time(), "how": "challenge with N answered"}
    return {"at": None, "how": f"deadline; last attempt: {last}"}


def _port(address: str, port: int, deadline: float) -> dict:
    last = "no attempt"
    while time.time() < deadline:
        try:
            with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S):
                return {"at": time.time(), "how": "agent port open"}
        except ConnectionRefusedError:
            return {"at": time.time(), "how": "refused by the guest (no agent without N)"}
        except OSError as exc:  # no route (ARP unanswered), timeout: no address yet
            last = type(exc).__name__
            time.sleep(RETRY_S)
    return {"at": None, "how": f"deadline; last attempt: {last}"}


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "challenge":
        result = _challenge(argv[1], argv[2], argv[3], float(argv[4]))
    elif len(argv) == 4 and argv[0] == "port":
        result = _port(argv[1], int(argv[2]), float(argv[3]))
    else:
        print("usage: cloud_probe.py challenge ADDRESS:PORT SERVER_ID NONCE_FILE DEADLINE | "
              "port ADDRESS PORT DEADLINE", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
