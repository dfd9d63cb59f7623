"""Options of the compute host's TPM access, in nova.conf's [trusted_launch] section."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "trusted_launch"

tpm_opts = [
    cfg.StrOpt("tcti", default="device:/dev/tpmrm0",
               help="How to reach the TPM: device:/dev/tpmrm0 (kernel resource manager), "
                    "swtpm:host=H,port=P or mssim:host=H,port=P (simulators), or "
                    "tabrmd[:bus_name=NAME] (user-space resource manager)."),
    cfg.StrOpt("bind_key_algorithm", default="ecc", choices=["ecc", "rsa"],
               help="Algorithm of the PCR-locked bind keys: ecc (P-256, ECDH_ZGen; fast "
                    "to generate) or rsa (RSA-2048, OAEP-SHA256; slow to generate on "
                    "discrete TPMs)."),
    cfg.StrOpt("bind_key_pcrs", default="sha256:0,1,2,3,4,5,6,7",
               help="PCRs whose current values lock the bind keys (PolicyPCR), as "
                    "bank:pcr,pcr,... (ranges like 0-7 allowed; several banks joined by "
                    "'+'). Use only static boot PCRs; never PCR 10 (IMA)."),
    cfg.IntOpt("bind_key_pool_size", default=4, min=1,
               help="Bind keys generated ahead of time, off the launch path."),
    cfg.IntOpt("bind_key_max_uses", default=1, min=1,
               help="Launches a bind key serves before it is retired."),
    cfg.IntOpt("bind_key_lifetime", default=3600, min=1,
               help="Seconds after its creation when a bind key is retired."),
    cfg.IntOpt("attestation_key_handle", default=0x81010002, min=0x81000000, max=0x81FFFFFF,
               help="Persistent TPM handle of the host's attestation key (AK)."),
    cfg.IntOpt("storage_root_key_handle", default=0x81000001, min=0x81000000,
               max=0x81FFFFFF,
               help="Persistent TPM handle of the ECC P-256 storage root key (SRK)."),
    cfg.StrOpt("event_log_path",
               default="/sys/kernel/security/tpm0/binary_bios_measurements",
               help="TCG firmware event log sent to the TTP with each attestation."),
    cfg.StrOpt("ima_log_path",
               default="/sys/kernel/security/ima/binary_runtime_measurements",
               help="IMA measurement list, sent when a security profile checks runtime "
                    "integrity."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(tpm_opts, group=GROUP)


def list_opts() -> list:
    return [(GROUP, tpm_opts)]
