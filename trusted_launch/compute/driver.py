"""``TrustedLibvirtDriver``: Nova's libvirt driver with the trusted launch protocol.

nova.conf: ``[DEFAULT] compute_driver = trusted_launch.driver.TrustedLibvirtDriver``
(loaded through the shim ``nova.virt.trusted_launch.driver``).

An instance asks for a trusted launch with the server metadata
``trusted_token`` (the sealed token) and ``trusted_ttp`` (the TTP's base URL;
``trusted_sp`` is for the scheduler). For such an instance, inside
``spawn`` and before the guest exists, the driver:

1. forces a config drive (the only place N goes);
2. checks ``trusted_ttp`` against ``[trusted_launch] allowed_ttp_urls`` and
   starts steps 5-11 (:class:`~trusted_launch.compute.launch.TrustedLaunchHost`:
   bind key, Certify, TTP attestation over HTTPS, or oslo.messaging RPC with
   ``ttp_transport = rpc``) in a worker thread, while
   ``LibvirtDriver._create_image`` downloads and caches the base image and
   makes the instance's disks (neither needs the other; the attestation no
   longer adds its round trip to ``spawn``);
3. once both are done, step 12: decryption of {N, H} in the TPM;
4. compares H with the digest of the cached base image in
   ``<instances_path>/_base/`` (the bytes this host boots, hashed once per
   cached file, :mod:`.image_digest`); Glance's ``os_hash_value`` is never used;
5. keeps N in memory until ``_create_configdrive`` writes it to
   ``trusted_launch/nonce`` on the config drive (:mod:`.nonce_injection`);
   then ``LibvirtDriver`` creates and starts the guest as usual.

Instances without these properties take the unchanged ``LibvirtDriver`` path,
decided from what Nova loaded (:mod:`.launch_request`): the metadata of an
instance never launched trusted is never lazy-loaded, and an instance launched
trusted that lost its properties is refused rather than started as a plain one.

Encrypted images (:mod:`.encrypted_image`): if the cached base image is a
LUKS-encrypted qcow2, the token must carry its key (and a key needs such an
image; either mismatch is refused). H is checked on the ciphertext. The
driver then makes the root disk a LUKS qcow2 overlay with the same key,
adds ``<encryption format='luks'>`` for it and its backing store to the
domain XML, and defines the libvirt secret (ephemeral, private) only around
the guest's start in ``_create_guest`` (and ``_soft_reboot``); every later
start gets the key again from its re-attestation. Live migration of such an
instance is refused. The host needs, in nova.conf, ``[DEFAULT]
force_raw_images = False`` (Nova would otherwise try to convert the image to
raw: refused with a clear fault) and qcow2 instance disks (``[libvirt]
images_type = qcow2``, or ``default`` with ``use_cow_images = True``).

Every other path that starts a trusted guest re-attests the host that starts
it with the instance's token and uuid (the TTP accepts a token again for the
launch id that first redeemed it, :mod:`.relaunch`): rebuild, evacuate and
unshelve go through ``spawn``; cold migration and resize run the protocol in
``finish_migration`` on the destination (N then goes to a config drive only
if none came with the instance); live migration in ``pre_live_migration`` on
the destination before it prepares any disk; hard reboot, power on and
resume after a host reboot in ``_hard_reboot`` and soft reboot in
``_soft_reboot`` (a refused guest is stopped, fail closed); revert resize in
``finish_revert_migration``.
The re-released N must match the commitment the first launch recorded in
system metadata. A refusal fails the operation with
:class:`~.relaunch.TrustedRelaunchRefused`, whose fault names the check.

Unshelving an offloaded instance boots its shelve snapshot, a new image
whose digest is not the token's H: the host refuses it (fail closed) with
``ImageUnacceptable`` and the instance stays shelved. The tenant's way back is
a new trusted server from the snapshot, with a token for the snapshot's digest
that the tenant checked. (Nova does not let a shelved-offloaded server's
metadata change, so the token cannot be replaced in place.)

Refusals (the instance goes to ERROR; the fault names the check and reason,
never N, which no exception or log line ever contains):

* image digest mismatch, no local base image (RBD clone, boot from volume):
  ``ImageUnacceptable``: the compute manager aborts the build, no reschedule;
* the TTP refused the evidence (``attestation_refused``: profile, token,
  replay, ...), TTP not on the allow-list, TTP unreachable or answering
  nonsense, released secrets that do not open, incomplete properties:
  ``BuildAbortException``, no reschedule. Another host would present the same
  token to the same TTP, and a TTP outage is not this host's fault;
  rescheduling would only spread the failure (and count it against more hosts
  in ``BuildFailureWeigher``);
* this host's trusted launch machinery is not ready (TPM unreachable at
  ``init_host``, no AK certificate, TPM errors during the launch): a plain
  exception, so Nova reschedules the build to another host if it can.

Nova counts every failed build against the host (``BuildFailureWeigher``),
aborted or rescheduled; a tenant's bad token or image therefore lowers the
weight of the host that refused it, as any failed build does.

``update_provider_tree`` reports ``CUSTOM_TRUSTED_SP_<NAME>`` for
``[trusted_launch] host_security_profile`` and every weaker profile, only
while the host is ready and its last periodic attestation
(:mod:`.host_monitor`, ``host_attestation_interval``) did not find it below
that profile, and removes other ``CUSTOM_TRUSTED_SP_*`` traits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import pathlib
import threading
import time
from collections.abc import Iterator

import nova.conf
import oslo_messaging
from nova import exception
from nova.compute import vm_states
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagecache
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from trusted_launch.compute.encrypted_image import (
    BaseDiskInfos,
    EncryptedRoot,
    ImageEncryptionRefused,
    add_disk_encryption,
    check_host_settings,
    check_key_matches,
    defined_secret,
    inspect_disk,
    prepare_root_disk,
    secret_uuid_for,
)
from trusted_launch.compute.errors import ImageDigestMismatch, LaunchRefused
from trusted_launch.compute.host_monitor import HostMonitor, below
from trusted_launch.compute.image_digest import BaseImageDigests, BaseImageMissing
from trusted_launch.compute.launch import (
    HostIdentity,
    PendingRelease,
    StepTimer,
    TrustedLaunchHost,
    check_image_digest,
)
from trusted_launch.compute.launch_request import (
    TrustedLaunchRequest,
    instance_launch_request,
    trusted_launch_request,
)
from trusted_launch.compute.nonce_injection import PendingNonces, create_config_drive_with_nonce
from trusted_launch.compute.notifications import AttestationNotifier
from trusted_launch.compute.relaunch import TrustedRelaunchRefused, check_or_commit
from trusted_launch.compute.release_receipt import load_receipt_keys, receipt_key_pem
from trusted_launch.compute.ttp_client import BaseTTPClient, check_ttp_url, make_ttp_client
from trusted_launch.conf import compute as compute_conf
from trusted_launch.conf import scheduler as scheduler_conf
from trusted_launch.conf import tpm as tpm_conf
from trusted_launch.tpm import BindKeyPool, TPMDevice, TPMError

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
for _module in (compute_conf, tpm_conf, scheduler_conf):
    _module.register_opts(CONF)

TRAIT_PREFIX = "CUSTOM_TRUSTED_SP_"
#: Under ``instances_path``: empty encrypted overlays, one per image, key and size.
OVERLAY_TEMPLATE_DIR = "_trusted_launch_overlays"
ATTESTER_THREADS = 4  # launches attesting at once while their images are fetched
UNSHELVE_HINT = ("; unshelving boots the shelve snapshot, a new image: launch a new trusted "
                 "server from the snapshot with a token for its digest")


@dataclasses.dataclass(frozen=True)
class Attestation:
    """Steps 5-11 of one launch, running while Nova fetches its image and makes its disks."""

    future: concurrent.futures.Future  # -> PendingRelease, or the step's error
    timer: StepTimer
    started: float  # time.perf_counter() when it was started


class TrustedHostNotReady(Exception):
    """This host cannot run trusted launches now (Nova reschedules the build)."""


def profile_traits(host_profile: str | None, profiles: list[str]) -> set[str]:
    """Traits for a host of ``host_profile``: its own and every weaker profile's."""
    if not host_profile:
        return set()
    ordered = list(profiles)
    names = ordered[:ordered.index(host_profile) + 1] if host_profile in ordered \
        else [host_profile]
    return {TRAIT_PREFIX + name.upper().replace("-", "_") for name in names}


# Factories: how the host-side objects are built from nova.conf.
def make_tpm_device(conf=CONF) -> TPMDevice:
    """The host's TPM as configured by ``[trusted_launch] tcti`` and key handles."""
    group = conf.trusted_launch
    return TPMDevice(group.tcti, srk_handle=group.storage_root_key_handle,
                     ak_handle=group.attestation_key_handle)


def make_bind_key_pool(device: TPMDevice, conf=CONF) -> BindKeyPool:
    """The bind-key pool as configured by ``[trusted_launch] bind_key_*``."""
    group = conf.trusted_launch
    return BindKeyPool(device, algorithm=group.bind_key_algorithm,
                       pcr_selection=group.bind_key_pcrs, size=group.bind_key_pool_size,
                       max_uses=group.bind_key_max_uses, lifetime_s=group.bind_key_lifetime)


def read_ak_certificate(path: str) -> str:
    """The PEM AK certificate written by ``trusted-launch host enroll``."""
    text = pathlib.Path(path).read_text(encoding="ascii")
    if "BEGIN CERTIFICATE" not in text:
        raise ValueError(f"{path} holds no PEM certificate")
    return text


def make_event_log_reader(path: str):
    """A callable returning the firmware event log's current bytes."""
    return lambda: pathlib.Path(path).read_bytes()


class PoolRefiller:
    """Keeps the bind-key pool full from a daemon thread, off the launch path."""

    def __init__(self, pool: BindKeyPool) -> None:
        self.pool = pool
        self._wanted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bind-key-pool", daemon=True)
        self._stopped = False

    def start(self) -> None:
        self._thread.start()
        self.request()

    def request(self) -> None:
        """Ask the thread to top the pool up."""
        self._wanted.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread once its current fill (if any) ends, waiting up to ``timeout``."""
        self._stopped = True
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopped:
                return
            try:
                made = self.pool.fill()
                LOG.debug("bind key pool refilled with %d key(s)", made)
            except (TPMError, ValueError) as exc:
                LOG.error("bind key pool refill failed: %s", exc)


class TrustedLibvirtDriver(libvirt_driver.LibvirtDriver):
    """LibvirtDriver that runs the trusted launch protocol before a guest exists."""

    def __init__(self, virtapi, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        self.trusted_host: TrustedLaunchHost | None = None
        self.trusted_device: TPMDevice | None = None
        self.pool_refiller: PoolRefiller | None = None
        self.host_monitor: HostMonitor | None = None
        self.not_ready_reason = "init_host has not run"
        self.host_security_profile: str | None = None
        self.base_image_digests = BaseImageDigests()
        self.base_disk_infos = BaseDiskInfos()
        self._pending_nonces = PendingNonces()
        self._pending_receipts: dict[str, bytes] = {}
        self._receipt_key_pem: bytes | None = None  # public; guests check receipts with it
        self._image_keys: dict[str, EncryptedRoot] = {}  # repr hides each key
        self._launching: dict[str, TrustedLaunchRequest] = {}
        self._relaunching: dict[str, str] = {}  # instance uuid -> the operation starting it
        self._ttp_clients: dict[str, BaseTTPClient] = {}
        self._rpc_transport = None  # oslo.messaging transport; init_host makes it (rpc)
        self.notifier: AttestationNotifier | None = None
        # Steps 5-11 of launches run here while Nova fetches the image and makes the disks.
        self._attesters = concurrent.futures.ThreadPoolExecutor(
            max_workers=ATTESTER_THREADS, thread_name_prefix="trusted-launch-attest")

    # Host set-up -----------------------------------------------------------------
    def init_host(self, host: str) -> None:
        super().init_host(host)
        try:
            self._init_trusted_launch(host)
        except (TPMError, OSError, ValueError) as exc:
            self.not_ready_reason = f"{type(exc).__name__}: {exc}"
            LOG.error("trusted launch disabled on this host until restart: %s",
                      self.not_ready_reason)

    def _init_trusted_launch(self, host: str) -> None:
        group = CONF.trusted_launch
        certificate = read_ak_certificate(group.ak_certificate_file)
        receipt_keys = load_receipt_keys(group.ttp_receipt_key_file,
                                         required=group.ttp_transport == "rpc")
        if group.ttp_transport == "rpc" and self._rpc_transport is None:
            self._rpc_transport = make_rpc_transport()
        device = make_tpm_device()
        try:
            device.ensure_attestation_key()
            pool = make_bind_key_pool(device)
        except BaseException:
            device.close()
            raise
        self.trusted_device = device
        self.pool_refiller = PoolRefiller(pool)
        self.trusted_host = TrustedLaunchHost(
            device=device, pool=pool,
            identity=HostIdentity(group.host_name or host, certificate),
            read_event_log=make_event_log_reader(group.event_log_path),
            bind_key_pcrs=group.bind_key_pcrs, receipt_keys=receipt_keys)
        self.host_security_profile = group.host_security_profile
        self._receipt_key_pem = receipt_key_pem(receipt_keys)
        self.notifier = AttestationNotifier(conf=CONF)
        self.pool_refiller.start()
        self.host_monitor = self._start_host_monitor(device, group.host_name or host)
        LOG.info("trusted launch ready: TPM %s, host name %s, profile %s",
                 device.tcti, group.host_name or host, group.host_security_profile)

    def _start_host_monitor(self, device: TPMDevice, host_name: str) -> HostMonitor | None:
        """Periodic re-attestation, if an interval and a TTP are configured."""
        group = CONF.trusted_launch
        url = group.host_attestation_ttp_url or next(iter(group.allowed_ttp_urls), None)
        if not group.host_attestation_interval or not url:
            return None
        monitor = HostMonitor(
            device=device, ttp=self._ttp_client(check_ttp_url(url, [url])),
            host_name=host_name, read_event_log=make_event_log_reader(group.event_log_path),
            pcr_selection=group.bind_key_pcrs, ima_list_path=group.ima_measurement_list,
            interval=group.host_attestation_interval)
        monitor.start(initial_delay=None)
        return monitor

    def cleanup_host(self, host: str) -> None:
        if self.host_monitor is not None:
            self.host_monitor.stop()
        if self.pool_refiller is not None:
            self.pool_refiller.stop()
        if self.trusted_device is not None:
            self.trusted_device.close()
        if self.notifier is not None:
            self.notifier.close()
        if self._rpc_transport is not None:
            # Closing the bus connections takes seconds (under eventlet); Nova's shutdown
            # must not wait for it.
            threading.Thread(target=self._rpc_transport.cleanup, daemon=True,
                             name="trusted-launch-rpc-cleanup").start()
            self._rpc_transport = None
        self._ttp_clients.clear()
        self._attesters.shutdown(wait=False)
        self.trusted_host = None
        super().cleanup_host(host)

    # Placement traits --------------------------------------------------------------
    def update_provider_tree(self, provider_tree, nodename, allocations=None) -> None:
        super().update_provider_tree(provider_tree, nodename, allocations=allocations)
        wanted = set()
        profiles = CONF.trusted_launch.security_profiles
        monitor = self.host_monitor
        if self.trusted_host is not None and not below(
                monitor.last if monitor else None, self.host_security_profile, profiles):
            wanted = profile_traits(self.host_security_profile, profiles)
        current = provider_tree.data(nodename).traits
        stale = {t for t in current if t.startswith(TRAIT_PREFIX)} - wanted
        if stale:
            provider_tree.remove_traits(nodename, *stale)
        if wanted:
            provider_tree.add_traits(nodename, *wanted)

    # Spawn -------------------------------------------------------------------------
    def spawn(self, context, instance, image_meta, injected_files, admin_password,
              allocations, network_info=None, block_device_info=None, power_on=True,
              accel_info=None):
        try:
            request = instance_launch_request(instance)
        except ValueError as exc:
            raise exception.BuildAbortException(instance_uuid=instance.uuid,
                                                reason=str(exc)) from None
        if request is None:
            return super().spawn(context, instance, image_meta, injected_files,
                                 admin_password, allocations, network_info=network_info,
                                 block_device_info=block_device_info, power_on=power_on,
                                 accel_info=accel_info)
        instance.config_drive = "True"
        self._launching[instance.uuid] = request
        try:
            return super().spawn(context, instance, image_meta, injected_files,
                                 admin_password, allocations, network_info=network_info,
                                 block_device_info=block_device_info, power_on=power_on,
                                 accel_info=accel_info)
        finally:
            self._launching.pop(instance.uuid, None)
            self._pending_nonces.pop(instance.uuid)
            self._pending_receipts.pop(instance.uuid, None)
            self._image_keys.pop(instance.uuid, None)

    def _create_image(self, context, instance, disk_mapping, injection_info=None,
                      suffix="", disk_images=None, block_device_info=None,
                      fallback_from_host=None, ignore_bdi_for_swap=False):
        request = self._launching.get(instance.uuid) if suffix == "" else None
        attestation = None
        if request is not None:
            if self._is_booted_from_volume(block_device_info):
                raise exception.ImageUnacceptable(
                    image_id=instance.image_ref or "(volume)",
                    reason="trusted launch needs an image-backed root disk; the host "
                           "cannot digest a volume")
            attestation = self._start_attestation(instance, request)
        try:
            created = super()._create_image(
                context, instance, disk_mapping, injection_info=injection_info,
                suffix=suffix, disk_images=disk_images, block_device_info=block_device_info,
                fallback_from_host=fallback_from_host, ignore_bdi_for_swap=ignore_bdi_for_swap)
        except exception.ImageUnacceptable as exc:
            self._abandon_attestation(attestation)
            if instance.uuid not in self._launching or not CONF.force_raw_images:
                raise
            raise exception.ImageUnacceptable(
                image_id=instance.image_ref,
                reason="trusted launch: an encrypted image needs [DEFAULT] force_raw_images = "
                       f"False on this host (it is never decrypted to disk); {exc}") from None
        except BaseException:
            self._abandon_attestation(attestation)
            raise
        if attestation is not None:
            image_id = (disk_images or {}).get("image_id") or instance.image_ref
            self._run_trusted_launch(instance, request, image_id, attestation)
        return created

    def _create_configdrive(self, context, instance, injection_info, rescue=False):
        nonce = None if rescue else self._pending_nonces.pop(instance.uuid)
        if nonce is not None and instance.uuid in self._relaunching and \
                self._config_drive_exists(instance):
            return None  # moved with the instance; N on it matched the commitment
        if nonce is None:
            if instance.uuid in self._launching and not rescue:
                raise exception.BuildAbortException(
                    instance_uuid=instance.uuid,
                    reason="trusted launch: no released nonce for the config drive")
            return super()._create_configdrive(context, instance, injection_info,
                                               rescue=rescue)
        create_config_drive_with_nonce(self, context, instance, injection_info, nonce,
                                       receipt=self._pending_receipts.pop(instance.uuid, None),
                                       receipt_key=self._receipt_key_pem)
        return None

    # Starting a launched guest again: moves, reboots, power on ----------------------
    def finish_migration(self, context, migration, instance, disk_info, network_info,
                         image_meta, resize_instance, allocations, block_device_info=None,
                         power_on=True, share_info=None):
        """Cold migration / resize: the destination runs the protocol before the guest."""
        request = self._relaunch_request(instance, "cold migration or resize")
        if request is not None:
            self._launching[instance.uuid] = request
            self._relaunching[instance.uuid] = "cold migration or resize"
        try:
            return super().finish_migration(
                context, migration, instance, disk_info, network_info, image_meta,
                resize_instance, allocations, block_device_info=block_device_info,
                power_on=power_on, share_info=share_info)
        finally:
            self._forget_launch(instance.uuid)

    def finish_revert_migration(self, context, instance, network_info, migration,
                                block_device_info=None, power_on=True, share_info=None):
        """Revert resize: the source host re-attests before it starts the guest again."""
        self._reattest(instance, "revert resize")
        return super().finish_revert_migration(
            context, instance, network_info, migration, block_device_info=block_device_info,
            power_on=power_on, share_info=share_info)

    def pre_live_migration(self, context, instance, block_device_info, network_info,
                           disk_info, migrate_data):
        """Live migration: the destination re-attests before it prepares any disk.

        Nova 34 creates an empty ``disk.config`` here and libvirt's block
        migration copies the source's drive into it, N included; the
        re-released N is only compared with the commitment, then dropped.
        """
        self._reattest(instance, "live migration")
        return super().pre_live_migration(context, instance, block_device_info,
                                          network_info, disk_info, migrate_data)

    def _hard_reboot(self, context, instance, network_info, share_info,
                     block_device_info=None, accel_info=None):
        """Hard reboot, power on, resume after a host reboot: re-attest this host first.

        On a refusal the guest is stopped if it still runs (fail closed: the
        host's state may have changed since the guest started) and not started.
        """
        try:
            self._reattest(instance, "hard reboot or power on")
        except TrustedRelaunchRefused:
            self._stop_refused_guest(instance)
            raise
        try:
            return super()._hard_reboot(context, instance, network_info, share_info,
                                        block_device_info=block_device_info,
                                        accel_info=accel_info)
        finally:
            self._image_keys.pop(instance.uuid, None)

    def _soft_reboot(self, instance):
        """Soft reboot restarts the domain too: re-attest first, stop the guest if refused."""
        try:
            self._reattest(instance, "soft reboot")
        except TrustedRelaunchRefused:
            self._stop_refused_guest(instance)
            raise
        with self._image_secret(instance):
            return super()._soft_reboot(instance)

    def _relaunch_request(self, instance, operation: str) -> TrustedLaunchRequest | None:
        try:
            return instance_launch_request(instance)
        except ValueError as exc:
            raise TrustedRelaunchRefused(operation=operation, reason=str(exc)) from None

    def _reattest(self, instance, operation: str) -> None:
        """Run steps 5-12 again for a guest about to start; the same N or a refusal."""
        request = self._relaunch_request(instance, operation)
        if request is None:
            return
        if self.trusted_host is None:
            raise TrustedRelaunchRefused(
                operation=operation,
                reason=f"trusted launch is not available on this host: {self.not_ready_reason}")
        timer = StepTimer()
        try:
            secrets = self._release(instance, request, timer)
            check_or_commit(instance.system_metadata, instance.uuid, secrets.nonce)
        except LaunchRefused as exc:
            self._notify_refusal(instance, request, exc)
            raise TrustedRelaunchRefused(operation=operation,
                                         reason=_fault_reason(exc)) from None
        except TrustedHostNotReady as exc:
            raise TrustedRelaunchRefused(operation=operation, reason=str(exc)) from None
        self._hold_image_key(instance, request, secrets.image_key, operation)
        LOG.info("trusted launch: this host re-attested for %s (%s)", operation,
                 ", ".join(f"{k} {v:.0f} ms" for k, v in timer.steps.items()),
                 instance=instance)

    def _stop_refused_guest(self, instance) -> None:
        try:
            self._destroy(instance)
        except exception.NovaException as exc:
            LOG.error("could not stop the guest after the refusal: %s", exc, instance=instance)

    def _forget_launch(self, instance_uuid: str) -> None:
        self._launching.pop(instance_uuid, None)
        self._relaunching.pop(instance_uuid, None)
        self._pending_nonces.pop(instance_uuid)
        self._pending_receipts.pop(instance_uuid, None)
        self._image_keys.pop(instance_uuid, None)

    def _config_drive_exists(self, instance) -> bool:
        return self.image_backend.by_name(instance, "disk.config",
                                          self._get_disk_config_image_type()).exists()

    # The protocol ------------------------------------------------------------------
    def _start_attestation(self, instance, request: TrustedLaunchRequest) -> Attestation:
        """Steps 5-11 for ``instance`` in a worker thread (the image is fetched meanwhile)."""
        if self.trusted_host is None:
            raise TrustedHostNotReady(
                f"trusted launch is not available on this host: {self.not_ready_reason}")
        timer, started = StepTimer(), time.perf_counter()
        return Attestation(self._attesters.submit(self._attest, instance, request, timer),
                           timer, started)

    def _abandon_attestation(self, attestation: Attestation | None) -> None:
        """The launch failed before step 12: wait for its attestation, free its bind key."""
        if attestation is None:
            return
        try:
            pending = attestation.future.result()
        except Exception:  # the launch's own error is the one to report
            return
        try:
            self.trusted_host.abandon(pending)
        finally:
            self._refill_pool()

    def _refill_pool(self) -> None:
        """Ask the pool refiller for a fresh warm bind key (a launch used or dropped one)."""
        if self.pool_refiller is not None:
            self.pool_refiller.request()

    def _run_trusted_launch(self, instance, request: TrustedLaunchRequest,
                            image_id: str, attestation: Attestation) -> None:
        """Step 12 and the checks for ``instance``; N waits in memory for the config drive."""
        base = pathlib.Path(self.image_cache_manager.cache_dir,
                            imagecache.get_cache_fname(image_id))
        timer, waited = attestation.timer, time.perf_counter()
        try:
            pending = attestation.future.result()
            timer.record("attestation_wait", waited)
            secrets = self._open(instance, request, pending, timer)
            checked = time.perf_counter()
            self._check_image(secrets.image_digest, base, image_id)
            timer.record("image_digest", checked)
            check_or_commit(instance.system_metadata, instance.uuid, secrets.nonce)
        except ImageDigestMismatch as exc:
            self._notify_refusal(instance, request, exc)
            reason = _fault_reason(exc)
            if instance.vm_state == vm_states.SHELVED_OFFLOADED:
                reason += UNSHELVE_HINT
            raise exception.ImageUnacceptable(image_id=image_id, reason=reason) from None
        except LaunchRefused as exc:
            self._notify_refusal(instance, request, exc)
            operation = self._relaunching.get(instance.uuid)
            if operation is not None:
                raise TrustedRelaunchRefused(operation=operation,
                                             reason=_fault_reason(exc)) from None
            raise exception.BuildAbortException(instance_uuid=instance.uuid,
                                                reason=_fault_reason(exc)) from None
        prepared = time.perf_counter()
        self._prepare_encrypted_root(instance, request, secrets.image_key, base, image_id)
        timer.record("encrypted_image", prepared)
        self._pending_nonces.put(instance.uuid, secrets.nonce)
        ended = time.perf_counter()
        LOG.info("trusted launch checks passed in %.1f ms (%s), of which %.1f ms in spawn's "
                 "path (the rest overlapped the image and disks)",
                 (ended - attestation.started) * 1000,
                 ", ".join(f"{k} {v:.1f} ms" for k, v in timer.steps.items()),
                 (ended - waited) * 1000, instance=instance)

    def _release(self, instance, request: TrustedLaunchRequest, timer: StepTimer):
        """Steps 5-12 in this thread (re-attestation before a restart)."""
        return self._open(instance, request, self._attest(instance, request, timer), timer)

    def _attest(self, instance, request: TrustedLaunchRequest,
                timer: StepTimer) -> PendingRelease:
        """Steps 5-11: Certify a bind key, the TTP's verdict and release."""
        url = check_ttp_url(request.ttp_url, CONF.trusted_launch.allowed_ttp_urls)
        ttp = self._ttp_client(url)
        try:
            return self.trusted_host.attest(ttp, token=request.token,
                                            launch_id=instance.uuid, timer=timer)
        except TPMError as exc:
            self._refill_pool()
            raise TrustedHostNotReady(f"trusted launch: TPM failure: {exc}") from None
        except BaseException:
            self._refill_pool()  # attest() flushed the launch's key
            raise

    def _open(self, instance, request: TrustedLaunchRequest, pending: PendingRelease,
              timer: StepTimer):
        """Step 12: open {N, H} in the TPM; the receipt and notification for the launch."""
        try:
            secrets = self.trusted_host.open(pending, timer=timer)
        except TPMError as exc:
            raise TrustedHostNotReady(f"trusted launch: TPM failure: {exc}") from None
        finally:
            self._refill_pool()  # once the launch's key is flushed, as before the overlap
        if pending.receipt is not None:
            self._pending_receipts[instance.uuid] = json.dumps(
                pending.receipt, sort_keys=True).encode()
        if self.notifier is not None:
            self.notifier.attestation_succeeded(instance.uuid, CONF.host, request.profile or "",
                                                pending.attestation_id, dict(timer.steps))
        return secrets

    def _notify_refusal(self, instance, request: TrustedLaunchRequest | None,
                        refusal: LaunchRefused) -> None:
        """Report a refused launch or restart on the message bus (never blocks)."""
        if self.notifier is not None:
            profile = (request.profile if request else None) or ""
            self.notifier.attestation_refused(instance.uuid, CONF.host, profile,
                                              refusal.check, refusal.reason)

    def _check_image(self, expected, base: pathlib.Path, image_id: str) -> None:
        try:
            actual = self.base_image_digests.digest(base, expected.algorithm)
        except BaseImageMissing:
            raise exception.ImageUnacceptable(
                image_id=image_id,
                reason="trusted launch needs the image cached on this host's disk "
                       f"({base} is missing; RBD-backed images are not supported)") from None
        except OSError as exc:
            raise exception.ImageUnacceptable(
                image_id=image_id, reason=f"cannot digest the cached image: {exc}") from None
        check_image_digest(expected, actual.value)

    # Encrypted images ----------------------------------------------------------------
    def _root_disk_path(self, instance) -> str:
        return os.path.join(libvirt_utils.get_instance_path(instance), "disk")

    def _prepare_encrypted_root(self, instance, request: TrustedLaunchRequest,
                                image_key: bytes | None, base: pathlib.Path,
                                image_id: str) -> None:
        """If the checked base is LUKS-encrypted: an encrypted root disk, the key held."""
        try:
            info = self.base_disk_infos.inspect(base)
            if not check_key_matches(info, image_key):
                return
            check_host_settings(force_raw_images=CONF.force_raw_images,
                                images_type=CONF.libvirt.images_type,
                                use_cow_images=CONF.use_cow_images)
            root = prepare_root_disk(self._root_disk_path(instance), info, image_key,
                                     instance.uuid, template_dir=os.path.join(
                                         CONF.instances_path, OVERLAY_TEMPLATE_DIR))
        except (ImageEncryptionRefused, OSError) as exc:
            refusal = exc if isinstance(exc, ImageEncryptionRefused) else \
                ImageEncryptionRefused(f"cannot inspect the cached image: {exc.strerror}")
            self._notify_refusal(instance, request, refusal)
            raise exception.ImageUnacceptable(image_id=image_id,
                                              reason=_fault_reason(refusal)) from None
        self._image_keys[instance.uuid] = root

    def _hold_image_key(self, instance, request: TrustedLaunchRequest,
                        image_key: bytes | None, operation: str) -> None:
        """Keep a re-released key for the guest's start; refuse a disk/key mismatch."""
        path = self._root_disk_path(instance)
        try:
            if image_key is not None and operation == "live migration":
                raise ImageEncryptionRefused(
                    "live migration of an instance booted from an encrypted image is not "
                    "supported (its key would have to reach the destination's libvirt)")
            if not os.path.exists(path):
                if image_key is not None:
                    raise ImageEncryptionRefused(f"no root disk at {path} for the image key")
                return
            disk = inspect_disk(path)
            if check_key_matches(disk, image_key):
                self._image_keys[instance.uuid] = EncryptedRoot(
                    image_key, path, disk.backing_file or "", secret_uuid_for(instance.uuid))
        except ImageEncryptionRefused as exc:
            self._notify_refusal(instance, request, exc)
            raise TrustedRelaunchRefused(operation=operation,
                                         reason=_fault_reason(exc)) from None

    def _get_guest_xml(self, context, instance, *args, **kwargs):
        xml = super()._get_guest_xml(context, instance, *args, **kwargs)
        root = self._image_keys.get(instance.uuid)
        if root is None:
            return xml
        try:
            return add_disk_encryption(xml, root)
        except ImageEncryptionRefused as exc:
            self._image_keys.pop(instance.uuid, None)
            raise exception.ImageUnacceptable(image_id=instance.image_ref,
                                              reason=_fault_reason(exc)) from None

    def _create_guest(self, context, xml, instance, power_on=True, pause=False,
                      post_xml_callback=None):
        with self._image_secret(instance):
            return super()._create_guest(context, xml, instance, power_on=power_on,
                                         pause=pause, post_xml_callback=post_xml_callback)

    @contextlib.contextmanager
    def _image_secret(self, instance) -> Iterator[None]:
        """The instance's disk secret defined in libvirt for the duration, if a key waits."""
        root = self._image_keys.pop(instance.uuid, None)
        if root is None:
            yield
            return
        with defined_secret(self._host.get_connection(), root):
            yield

    def _ttp_client(self, url: str) -> BaseTTPClient:
        """The client of the allowed TTP ``url`` over [trusted_launch] ttp_transport."""
        client = self._ttp_clients.get(url)
        if client is None:
            client = make_ttp_client(CONF.trusted_launch, url, self._get_rpc_transport)
            self._ttp_clients[url] = client
        return client

    def _get_rpc_transport(self) -> oslo_messaging.Transport:
        """The RPC transport init_host made (ttp_transport = rpc); made now if it did not."""
        if self._rpc_transport is None:
            self._rpc_transport = make_rpc_transport()
        return self._rpc_transport


def make_rpc_transport() -> oslo_messaging.Transport:
    """The RPC transport to the TTP (ttp_rpc_transport_url, else [DEFAULT] transport_url).

    ValueError if the URL is unusable (invalid, or its driver is missing).
    """
    try:
        return oslo_messaging.get_rpc_transport(
            CONF, url=CONF.trusted_launch.ttp_rpc_transport_url or None)
    except oslo_messaging.MessagingException as exc:
        raise ValueError(f"ttp_transport = rpc: the transport URL is unusable "
                         f"({type(exc).__name__})") from None


def _fault_reason(refusal: LaunchRefused) -> str:
    """Short enough for Nova's 255-character fault message: the check, then why."""
    return f"trusted launch {refusal.check}: {refusal.reason}"


__all__ = ["TrustedHostNotReady", "TrustedLaunchRequest", "TrustedLibvirtDriver",
           "make_bind_key_pool", "make_tpm_device", "profile_traits", "read_ak_certificate",
           "trusted_launch_request"]
