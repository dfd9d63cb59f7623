"""``python -m trusted_launch_tempest_plugin.challenge``: one challenge, its answer as JSON.

Run by :func:`trusted_launch_tempest_plugin.tenant.challenge`, inside the
tenant's network namespace when there is one. Prints ``{"verified": true,
...}`` and exits 0 when the guest proved N, else ``{"verified": false,
"error": ...}`` and exits 1. N is read from the nonce file and never printed.
"""

from __future__ import annotations

import argparse
import json
import sys

from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.errors import ClientError
from trusted_launch.client.nonce_store import load_nonce
from trusted_launch.crypto.errors import CryptoError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="HOST:PORT of the guest agent")
    parser.add_argument("--server-id", required=True)
    parser.add_argument("--nonce-file", required=True)
    parser.add_argument("--timeout", type=float, default=10)
    args = parser.parse_args(argv)
    try:
        vm = verify_vm(args.address, args.server_id, load_nonce(args.nonce_file),
                       timeout=args.timeout)
    except (ClientError, CryptoError, ValueError, OSError) as exc:
        print(json.dumps({"verified": False, "error": str(exc)}))
        return 1
    print(json.dumps({"verified": True, "server_id": vm.server_id,
                      "ssh_host_key_fingerprint": vm.ssh_host_key_fingerprint}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
