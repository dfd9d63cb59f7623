"""Nova's functional harness with two computes running TrustedLibvirtDriver.

A test case class built on Nova's own ``ServersTestBase`` (shipped in the nova
wheel as ``nova.tests.functional``): real Nova API, conductor, scheduler with
SecurityProfileFilter and two nova-compute services loading our driver
through ``load_compute_driver`` and the ``nova.virt.trusted_launch`` shim,
each with its own swtpm from a :class:`~.nova_env.TrustedEnvironment` (set
as the class attribute ``env`` before the case runs). Faked, as in Nova's own
libvirt tests: libvirt (fakelibvirt), the image backend, Glance (with real
image bytes) and ``_create_image``, whose fake caches the base image exactly
where LibvirtDriver does through Nova's own download path. Used by the demo
(``python -m trusted_launch.demo.nova_scenarios``, no pytest) and by the Nova
tests; a development stand-in, never part of a deployment.

Import it only with ``OS_NOVA_DISABLE_EVENTLET_PATCHING`` decided (Nova's
functional package forbids eventlet once native threads are chosen).
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet.
import nova.tests.functional  # noqa: F401

# isort: split

import io
import os
import pathlib
import subprocess
import sys
import uuid
import warnings

import fixtures
from nova.tests.fixtures import libvirt_imagebackend
from nova.tests.functional.libvirt import base as libvirt_base
from nova.virt import images
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagecache
from sqlalchemy import exc as sqla_exc
from urllib3 import connection as urllib3_connection
from urllib3 import connectionpool

from trusted_launch.compute import driver as _driver  # noqa: F401 - registers its options
from trusted_launch.compute.nonce_injection import NONCE_PATH
from trusted_launch.sandbox.nova_env import TrustedEnvironment

CONF = libvirt_base.CONF
#: Nova's wheel installs its paste config under the virtualenv's etc/.
API_PASTE_INI = pathlib.Path(sys.prefix) / "etc" / "nova" / "api-paste.ini"
FILTER_PATH = "trusted_launch.scheduler.security_profile_filter.SecurityProfileFilter"
DRIVER = "trusted_launch.driver.TrustedLibvirtDriver"
HOST_ATTR = "OS-EXT-SRV-ATTR:host"
#: Polls (0.5 s apart) for a boot to settle: the first launch of an encrypted image
#: writes a LUKS header, which takes QEMU seconds of CPU on a loaded machine.
BOOT_WAIT_POLLS = 60
IMAGE_BYTES = b"trusted-launch functional test image\n" * 2048


def _new_disks_do_not_exist(original_init):
    """The fake image backend says every disk exists; real backends do not, for new disks."""
    def init(self, got_files=None, imported_files=None, exists=None):
        original_init(self, got_files, imported_files, exists or (lambda disk_name: False))
    return init


class TrustedNovaTestCase(libvirt_base.ServersTestBase):
    """Two libvirt computes running TrustedLibvirtDriver, each with its own swtpm."""

    ADMIN_API = True
    microversion = "latest"
    ADDITIONAL_FILTERS = ["SecurityProfileFilter"]
    #: compute host -> the security profile of its aggregate (and its driver's).
    HOST_PROFILES = {"host-a": "high", "host-b": "low"}
    env: TrustedEnvironment

    def setUp(self) -> None:
        backend_fixture = libvirt_imagebackend.LibvirtImageBackendFixture
        self.useFixture(fixtures.MockPatchObject(
            backend_fixture, "__init__", _new_disks_do_not_exist(backend_fixture.__init__)))
        super().setUp()
        # wsgi-intercept (placement, API) replaces urllib3's HTTPS connection
        # class, and its pass-through breaks on urllib3 2; every intercepted
        # endpoint is plain http://, so real HTTPS to the TTP gets the real class.
        self.useFixture(fixtures.MockPatchObject(connectionpool.HTTPSConnectionPool,
                                                 "ConnectionCls",
                                                 urllib3_connection.HTTPSConnection))
        libvirt_driver.LibvirtDriver._create_image.side_effect = self._fake_create_image
        self.flags(security_profiles=["low", "medium", "high"], group="trusted_launch")
        self.image_id = self._create_image_of(IMAGE_BYTES)
        for host in TrustedNovaTestCase.HOST_PROFILES:
            self._start_trusted_compute(host)
        self.aggregates = {}
        for host, profile in TrustedNovaTestCase.HOST_PROFILES.items():
            self.aggregates[profile] = self._create_aggregate(f"sp-{profile}")
            self.admin_api.post_aggregate_action(
                self.aggregates[profile],
                {"set_metadata": {"metadata": {"trusted_sp": profile}}})
            self.admin_api.add_host_to_aggregate(self.aggregates[profile], host)

    def _setup_services(self) -> None:
        # Nova 34's DB API uses orm.noload(), deprecated in SQLAlchemy 2.1;
        # Nova's WarningsFixture (reset after each test) makes that an error.
        warnings.filterwarnings("ignore", message=r"The noload\(\) option is deprecated",
                                category=sqla_exc.SADeprecationWarning)
        self.flags(api_paste_config=str(API_PASTE_INI), group="wsgi")
        self.flags(available_filters=[*CONF.filter_scheduler.available_filters, FILTER_PATH],
                   group="filter_scheduler")
        super()._setup_services()

    def _setup_compute_service(self) -> None:
        self.flags(compute_driver=DRIVER)

    def _clear_attrs(self) -> None:
        # Nova deletes instance attributes after each test; pytest's unittest
        # runner still needs the bound test method afterwards.
        name = self._testMethodName
        saved = self.__dict__.get(name)
        super()._clear_attrs()
        if saved is not None:
            self.__dict__[name] = saved

    # Set-up helpers ----------------------------------------------------------------
    def _start_trusted_compute(self, name: str) -> None:
        host = self.env.hosts[name]
        self.flags(tcti=host.tpm.tcti, event_log_path=str(host.event_log_file),
                   ak_certificate_file=str(host.ak_cert_file),
                   host_security_profile=self.HOST_PROFILES[name], bind_key_pool_size=1,
                   allowed_ttp_urls=[self.env.ttp_url, self.env.closed_port_url],
                   ttp_ca_file=str(self.env.ca.cert_file), ttp_connect_retries=0,
                   ttp_timeout=10, group="trusted_launch")
        self.start_compute(hostname=name)

    def _create_image_of(self, data: bytes, disk_format: str = "raw") -> str:
        """An image holding ``data`` in the harness' Glance (``disk_format`` as uploaded)."""
        image_id = str(uuid.uuid4())
        self.glance.create(None, {
            "id": image_id, "name": f"trusted-{image_id[:8]}", "status": "active",
            "disk_format": disk_format, "container_format": "bare", "size": len(data),
            "min_ram": 0, "min_disk": 0, "is_public": True, "properties": {}},
            data=io.BytesIO(data))
        return image_id

    def _fake_create_image(self, context, instance, disk_mapping, *args, **kwargs):
        """Cache the base image where LibvirtDriver does, through Nova's download path."""
        os.makedirs(self._instance_dir(instance.uuid), exist_ok=True)
        base = self._base_path(instance.image_ref)
        if not base.exists():
            base.parent.mkdir(parents=True, exist_ok=True)
            images.fetch(context, instance.image_ref, str(base))
        return False, False

    def _base_path(self, image_id: str) -> pathlib.Path:
        return pathlib.Path(CONF.instances_path, CONF.image_cache.subdirectory_name,
                            imagecache.get_cache_fname(image_id))

    @staticmethod
    def _instance_dir(instance_uuid: str) -> pathlib.Path:
        return pathlib.Path(CONF.instances_path, instance_uuid)

    # Actions -----------------------------------------------------------------------
    def _boot(self, *, token: str | None = None, profile: str = "high",
              ttp_url: str | None = None, host: str | None = None,
              image_id: str | None = None, expected_state: str = "ACTIVE") -> dict:
        server = self._build_server(image_uuid=image_id or self.image_id, networks="none")
        if token is not None:
            server["metadata"] = {"trusted_sp": profile, "trusted_token": token,
                                  "trusted_ttp": ttp_url or self.env.ttp_url}
        if host is not None:
            server["availability_zone"] = f"nova:{host}"
        created = self.api.post_server({"server": server})
        return self._wait_for_state_change(created, expected_state,
                                           max_retries=BOOT_WAIT_POLLS)

    def _config_drive_file(self, server_id: str, path: str) -> bytes:
        drive = self._instance_dir(server_id) / "disk.config"
        result = subprocess.run(["isoinfo", "-i", str(drive), "-R", "-x", f"/{path}"],
                                capture_output=True, check=True, timeout=30)
        return result.stdout

    def _mount_config_drive(self, server_id: str, mount: pathlib.Path) -> None:
        """Extract the files the guest needs, as a mounted config drive shows them."""
        for path in (NONCE_PATH, "openstack/latest/meta_data.json"):
            target = mount / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self._config_drive_file(server_id, path))


__all__ = ["API_PASTE_INI", "BOOT_WAIT_POLLS", "DRIVER", "FILTER_PATH", "HOST_ATTR",
           "IMAGE_BYTES", "TrustedNovaTestCase"]
