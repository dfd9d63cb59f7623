"""The tenant's side of a trusted launch, through the trusted_launch client library.

A token for the TTP (N kept in a 0600 nonce file, never in a log or an
argument), the image digest H as Glance stored it, and the challenge of a
booted guest. The challenge runs in ``[trusted_launch] tenant_namespace``
when set (``ip netns exec``, :mod:`.challenge`), since the tenant reaches its
guests' fixed IPs from there; the nonce goes there as a file name only.
The wait for a booting guest (:func:`wait_for_proof`) is bounded as a whole
and says, when it ends without a proof, what it waited for.
"""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable

from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.crypto.digest import ImageDigest

COMMAND_MARGIN_S = 60  # the challenge process's own start-up on a loaded machine
POLL_S = 3  # between two challenges of a guest that is still booting
CONSOLE_EVERY_S = 30  # how often a wait looks at the guest's console for a panic
KERNEL_PANIC = "Kernel panic"
MAC_MISMATCH = "MAC mismatch"
LOG = logging.getLogger(__name__)


class ChallengeFailed(Exception):
    """The guest did not prove N (or could not be reached); the message says which."""


class AnswerTimeout(ChallengeFailed):
    """The agent did not prove N within the wait (or its guest died); the message says
    what was awaited, for how long, the last error and the console's tail."""


def glance_digest(image: dict) -> ImageDigest:
    """H as Glance recorded it at upload (``os_hash_algo`` / ``os_hash_value``)."""
    algorithm, value = image.get("os_hash_algo"), image.get("os_hash_value")
    if not algorithm or not value:
        raise ValueError(f"image {image.get('id')} has no os_hash_value")
    return ImageDigest.parse(f"{algorithm}:{value}")


def launch_token(ttp_url: str, ca_file: str | None, profile: str, digest: ImageDigest,
                 nonce_dir: str, image_key: bytes | None = None) -> tuple[str, str]:
    """``(token, nonce file)`` for a launch of the image with digest ``digest``."""
    token, nonce_path = create_launch_token(ttp_url, profile, digest, ca_file=ca_file,
                                            nonce_dir=nonce_dir, image_key=image_key)
    return token, str(nonce_path)


def trusted_metadata(profile: str, ttp_url: str, token: str) -> dict[str, str]:
    """The server properties that request a trusted launch."""
    return {"trusted_sp": profile, "trusted_ttp": ttp_url, "trusted_token": token}


def challenge(address: str, server_id: str, nonce_file: str, namespace: str = "",
              timeout: float = 60) -> dict:
    """Challenge the guest agent at ``address`` (host:port); its answer, or ChallengeFailed."""
    argv = [sys.executable, "-m", "trusted_launch_tempest_plugin.challenge", "--address",
            address, "--server-id", server_id, "--nonce-file", nonce_file,
            "--timeout", str(timeout)]
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    try:
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=timeout + COMMAND_MARGIN_S, check=False,
                                cwd=pathlib.Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        raise ChallengeFailed(f"the challenge of {address} took over "
                              f"{timeout + COMMAND_MARGIN_S:.0f} s") from None
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise ChallengeFailed(f"the challenge of {address} printed no answer (exit "
                              f"{result.returncode}): {result.stderr.strip()[-500:]}") from None
    if result.returncode != 0 or not answer.get("verified"):
        raise ChallengeFailed(answer.get("error") or f"challenge exit {result.returncode}")
    return answer


def wait_for_proof(address: str, server_id: str, nonce_file: str, *, namespace: str,
                   answer_timeout: float, challenge_timeout: float,
                   console: Callable[[], str], poll: float = POLL_S) -> dict:
    """Challenge the booting guest until its agent proves N; at most ``answer_timeout`` s.

    Each challenge waits at most ``challenge_timeout`` and never past the deadline. A
    wrong answer (MAC mismatch) fails at once; so does a guest whose console (read
    through ``console`` every CONSOLE_EVERY_S) shows a kernel panic.
    """
    started = time.monotonic()
    attempts, tail, tail_at = 0, "", None
    while True:
        left = answer_timeout - (time.monotonic() - started)
        attempts += 1
        try:
            return challenge(address, server_id, nonce_file, namespace,
                             max(1.0, min(challenge_timeout, left)))
        except ChallengeFailed as exc:
            if MAC_MISMATCH in str(exc):
                raise
            error = str(exc)
        waited = time.monotonic() - started
        LOG.info("server %s: the agent at %s has not proved N yet (challenge %d, %.0f s): "
                 "%s", server_id, address, attempts, waited, error)
        if tail_at is None or time.monotonic() - tail_at >= CONSOLE_EVERY_S:
            tail, tail_at = console(), time.monotonic()
        if KERNEL_PANIC in tail or waited + poll >= answer_timeout:
            why = ("its console shows a kernel panic" if KERNEL_PANIC in tail
                   else f"answer_timeout {answer_timeout:.0f} s")
            raise AnswerTimeout(
                f"server {server_id}: its agent at {address} did not prove the launch "
                f"nonce within {waited:.0f} s ({why}; challenges: {attempts}); last error: "
                f"{error}; console tail:\n{console()}")
        time.sleep(poll)
