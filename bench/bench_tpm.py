"""TPM access layer on swtpm: bind key creation, Certify, ECDH_ZGen, RSA_Decrypt.

swtpm is 10-100x faster than a discrete TPM, so besides wall times this counts
the TPM commands each operation sends (what dominates on real hardware, at
>= 3 ms per command).  Baselines measured in the same run: one TPM2_GetRandom
round trip (the cheapest command over the same TCTI) and the same
cryptography done in software with ``cryptography``.
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ROOT = pathlib.Path(__file__).resolve().parent.parent
REPEAT = 20
CREATE_REPEAT = {"ecc": 10, "rsa": 5}
LABEL = b"trusted-launch/v1 release\0"
SELECTION = "sha256:0,1,2,3,4,5,6,7"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.swtpm import SECUREBOOT_LOG, StateCache, SwtpmProcess  # noqa: E402
from trusted_launch.tpm import bindkeys  # noqa: E402
from trusted_launch.tpm.device import TPMDevice  # noqa: E402


def _median_ms(func, repeat: int, setup=None) -> float:
    """Median milliseconds of ``func()``; ``setup()`` runs untimed before each call."""
    samples = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        started = time.perf_counter()
        func()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 3)


def _commands(device: TPMDevice, func) -> list[str]:
    """ESAPI calls that reach the TPM during one ``func()``."""
    device.command_log.clear()
    func()
    return list(device.command_log)


def _ecc_point(key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


def _measure(device: TPMDevice) -> dict:
    figures: dict = {}
    ecc_key = bindkeys.create_bind_key(device, "ecc", SELECTION)
    rsa_key = bindkeys.create_bind_key(device, "rsa", SELECTION)
    peer = ec.generate_private_key(ec.SECP256R1())
    point = _ecc_point(peer)
    rsa_public = rsa.RSAPublicNumbers(65537, int.from_bytes(
        rsa_key.public[-256:], "big")).public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=LABEL)
    ciphertext = rsa_public.encrypt(b"k" * 32, oaep)
    soft_rsa = rsa.generate_private_key(65537, 2048)
    soft_ct = soft_rsa.public_key().encrypt(b"k" * 32, oaep)
    soft_ecc = ec.generate_private_key(ec.SECP256R1())

    operations = {
        "create_ecc_bind_key": (lambda: bindkeys.create_bind_key(device, "ecc", SELECTION),
                                CREATE_REPEAT["ecc"]),
        "create_rsa_bind_key": (lambda: bindkeys.create_bind_key(device, "rsa", SELECTION),
                                CREATE_REPEAT["rsa"]),
        "certify": (lambda: bindkeys.certify(device, ecc_key, b"q" * 32), REPEAT),
        "ecdh_zgen": (lambda: bindkeys.ecdh_zgen(device, ecc_key, point), REPEAT),
        "rsa_decrypt": (lambda: bindkeys.rsa_decrypt(device, rsa_key, ciphertext, LABEL),
                        REPEAT),
    }
    for name, (func, repeat) in operations.items():
        figures[f"tpm_{name}_ms"] = _median_ms(func, repeat)
        commands = _commands(device, func)
        figures[f"tpm_{name}_commands"] = len(commands)
        figures.setdefault("notes", {})[name] = " + ".join(commands)
    for name in ("ecdh_zgen", "rsa_decrypt"):  # with the session pre-started off-path
        func = operations[name][0]
        figures[f"tpm_{name}_prestarted_ms"] = _median_ms(
            func, REPEAT, setup=device.prestart_policy_session)
        device.prestart_policy_session()
        commands = _commands(device, func)
        figures[f"tpm_{name}_prestarted_commands"] = len(commands)
        figures["notes"][f"{name}_prestarted"] = " + ".join(commands)
    figures["baseline_tpm_get_random_ms"] = _median_ms(lambda: _get_random(device), REPEAT)
    figures["baseline_software_ecdh_ms"] = _median_ms(
        lambda: soft_ecc.exchange(ec.ECDH(), peer.public_key()), REPEAT)
    figures["baseline_software_rsa_oaep_decrypt_ms"] = _median_ms(
        lambda: soft_rsa.decrypt(soft_ct, oaep), REPEAT)
    figures["baseline_software_rsa_keygen_ms"] = _median_ms(
        lambda: rsa.generate_private_key(65537, 2048), CREATE_REPEAT["rsa"])
    figures["tpm_commands_per_launch"] = (figures["tpm_certify_commands"]
                                          + figures["tpm_ecdh_zgen_prestarted_commands"])
    return figures


def _get_random(device: TPMDevice) -> None:
    with device.esapi("GetRandom") as ectx:
        ectx.get_random(8)


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-tpm-") as root:
        cache = StateCache(pathlib.Path(root))
        with SwtpmProcess(cache.state(0), cache.ca) as swtpm:
            swtpm.boot(SECUREBOOT_LOG)
            with TPMDevice(swtpm.tcti) as device:
                device.ensure_attestation_key()
                figures = _measure(device)
    notes = figures.pop("notes")
    for name, value in sorted(figures.items()):
        print(f"   {name:45s} {value}")
    for name, commands in notes.items():
        print(f"   commands {name}: {commands}")
    figures["notes"] = "; ".join(f"{k}: {v}" for k, v in notes.items())
    return figures


if __name__ == "__main__":
    run()
