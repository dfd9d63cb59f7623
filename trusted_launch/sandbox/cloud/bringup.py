"""Bring the cloud up (idempotently) and tear it down.

Order: databases and the RabbitMQ vhost, keystone (then the catalog and
clouds.yaml), glance, placement, nova's control services, neutron, the TTP
(over HTTPS, and its RPC server on the cloud's RabbitMQ) and its receipt key
for the computes, the tenant network's wire, then per compute host its swtpm
(booted and enrolled), libvirtd, macvtap agent and nova-compute; then the
cloud's objects (aggregates, flavors, image, provider network and its DHCP
subnet); then neutron's DHCP agent, which serves that subnet with dnsmasq;
last the dashboard.  Every process is checked for readiness before the next
step; a failure names the service and shows the tail of its log.  A service
whose configuration files changed since it started is restarted.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from trusted_launch.sandbox.cloud import configs, dhcp, hypervisor, identity, network
from trusted_launch.sandbox.cloud.compute_hosts import (
    ComputeHost,
    compute_hosts,
    manufacture_once,
    swtpm_service,
)
from trusted_launch.sandbox.cloud.horizon import LOGIN_PATH, Horizon, make_reader_token
from trusted_launch.sandbox.cloud.layout import REPO, CloudPaths, CloudState
from trusted_launch.sandbox.cloud.processes import CloudError, ProcessTable, Service
from trusted_launch.sandbox.cloud.readiness import http_answers, tcp_listens, wait_until
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import LocalCA, boot
from trusted_launch.ttp.keystore import write_private_file

PROFILES = ("low", "medium", "high")
# --nova-driver: "trusted" (TrustedLibvirtDriver, SecurityProfileFilter) or "stock" (Nova's
# own libvirt driver and filters: nova.conf as configs.py writes it, without the
# trusted-launch configure step).
NOVA_DRIVERS = ("trusted", "stock")
TTP_DATABASE = configs.DB_PREFIX + "ttp"
MYSQL_DATABASES = ("keystone", "glance", "placement", "nova_api", "nova_cell0", "nova_cell1",
                   "neutron")
HTTP_TIMEOUT_S = 300.0  # generous: the machine may be loaded
COMPUTE_TIMEOUT_S = 600.0
TINY_IMAGE = "tl-tiny"
FLAVORS = {"tl.tiny": (1, 128, 1), "tl.small": (1, 1024, 3)}  # vcpus, MiB, GiB
NETWORK = "tl-net"
TTP_RPC_TOPIC = "trusted_launch_ttp"
#: How each compute host reaches the TTP: the low host over RPC (its refusals and an
#: accepted profile-low launch cross the bus), the high host over HTTPS.
TTP_TRANSPORTS = {"tl-compute-high": "https", "tl-compute-low": "rpc"}
# What the tenant's namespace may open on its guests: ping and the guest agent.
TENANT_INGRESS = ({"protocol": "icmp"},
                  {"protocol": "tcp", "port_range_min": 8950, "port_range_max": 8950})
SUBNET = "tl-subnet"
# The DHCP agent reports under a compute host's name: ML2's macvtap driver binds its
# port only on a host with a live macvtap agent (as in neutron's provider-network
# deployments, which run the DHCP agent on the compute nodes).
DHCP_AGENT_HOST = "tl-compute-high"
DHCP_AGENT = "neutron-dhcp-agent"
WSGI_APPS = {  # service: (WSGI application, environment variable naming its config dir)
    "keystone": ("keystone.wsgi.api:application", "OS_KEYSTONE_CONFIG_DIR"),
    "glance": ("glance.wsgi.api:application", "OS_GLANCE_CONFIG_DIR"),
    "placement": ("placement.wsgi.api:application", "OS_PLACEMENT_CONFIG_DIR"),
    "nova": ("nova.wsgi.osapi_compute:application", "OS_NOVA_CONFIG_DIR"),
    "neutron": ("neutron.wsgi.api:application", "OS_NEUTRON_CONFIG_DIR"),
}


@dataclass
class Report:
    """What ``--json`` prints: services, readiness times, virt type, durations."""

    services: dict[str, dict] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    virt_type: str = ""
    virt_type_reason: str = ""
    computes: dict[str, dict] = field(default_factory=dict)  # host: profile, TTP transport
    nova_driver: str = ""

    def service(self, name: str, seconds: float, started: bool, port: int | None = None,
                ) -> None:
        self.services[name] = {"ready_s": round(seconds, 2), "started": started,
                               **({"port": port} if port else {})}


class Cloud:
    """One cloud under ``paths.root``."""

    def __init__(self, paths: CloudPaths, horizon_venv: pathlib.Path | None = None,
                 nova_driver: str = "trusted") -> None:
        if nova_driver not in NOVA_DRIVERS:
            raise CloudError(f"nova driver {nova_driver!r} is not one of {NOVA_DRIVERS}")
        self.paths = paths
        self.nova_driver = nova_driver
        paths.make()
        self.state = CloudState.load_or_create(paths.state_file)
        self.horizon = Horizon(paths, self.state, horizon_venv) if horizon_venv else None
        self.table = ProcessTable(paths.run, paths.log)
        self.report = Report()
        self.hosts = compute_hosts({host: self.state.ports[f"swtpm-{host}"]
                                    for host in ("tl-compute-high", "tl-compute-low")})

    # -- helpers ----------------------------------------------------------------------
    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.paths.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["OS_CLIENT_CONFIG_FILE"] = str(self.paths.clouds_yaml)
        env.pop("PYTHONPATH", None)
        env.update(extra)
        return env

    def run(self, name: str, argv: Sequence[str], timeout: float = 600,
            env: dict[str, str] | None = None) -> str:
        """Run a set-up command; CloudError with its output when it fails.

        Its command line and output go to log/setup-<name>.log, passwords masked.
        """
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                                    env=env or self._env(), check=False)
        except subprocess.TimeoutExpired:
            raise CloudError(f"{name}: {argv[0]} did not finish in {timeout:.0f} s") from None
        output = self._mask(result.stdout + result.stderr)
        with open(self.paths.log / f"setup-{name}.log", "a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {self._mask(' '.join(argv))}\n{output}")
        if result.returncode != 0:
            tail = "\n".join(output.splitlines()[-20:])
            command = self._mask(' '.join(argv[:3]))
            raise CloudError(f"{name}: {command} failed ({result.returncode})\n{tail}")
        return result.stdout

    def _mask(self, text: str) -> str:
        for secret in self.state.passwords.values():
            text = text.replace(secret, "***")
        return text

    def once(self, step: str, action: Callable[[], object]) -> None:
        """Run ``action`` unless a previous run completed ``step``."""
        marker = self.paths.data / "steps" / step
        if marker.exists():
            return
        action()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()

    def start(self, service: Service, check: Callable[[], bool], timeout: float = HTTP_TIMEOUT_S,
              port: int | None = None) -> None:
        _, started = self.table.start(service)
        seconds = wait_until(service.name, check, timeout, self.table)
        self.report.service(service.name, seconds, started, port)

    def start_nova(self, service: Service, binary: str, host: str) -> None:
        """A Nova service, ready once it reported after this start (a restarted one's old
        record stays "up" for a while)."""
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
        self.start(service, self._nova_service_up(binary, host, since), COMPUTE_TIMEOUT_S)

    def connection(self, cloud: str = identity.ADMIN_CLOUD):
        import openstack

        os.environ["OS_CLIENT_CONFIG_FILE"] = str(self.paths.clouds_yaml)
        return openstack.connect(cloud=cloud)

    # -- bring-up ---------------------------------------------------------------------
    def up(self) -> Report:
        started = time.monotonic()
        self._check_tools()
        self.phase("databases", lambda: self.once("databases", self._create_databases))
        self.phase("rabbitmq", lambda: self.once("rabbitmq", self._rabbit_vhost))
        choice = hypervisor.choose_virt_type(self.paths.data)
        self.report.virt_type, self.report.virt_type_reason = choice.virt_type, choice.reason
        self.phase("configs", lambda: self._write_configs(choice))
        self.report.nova_driver = self.nova_driver
        self._restart_on_driver_change()
        self.phase("keystone", self._keystone)
        self.phase("glance", lambda: self._wsgi_service("glance", [
            self.paths.bin("glance-manage"), "--config-file",
            str(self._conf("glance", "glance-api.conf")), "db_sync"]))
        self.phase("placement", lambda: self._wsgi_service("placement", [
            self.paths.bin("placement-manage"), "--config-file",
            str(self._conf("placement", "placement.conf")), "db", "sync"]))
        self.phase("nova", self._nova_control)
        self.phase("neutron", self._neutron)
        self.phase("ttp", self._ttp)
        self.phase("ttp_rpc", self._ttp_rpc)
        self.phase("tenant_network", network.create)
        for host in self.hosts:
            self.phase(host.name, lambda host=host: self._compute_host(host))
        try:
            self.phase("cloud_objects", self._cloud_objects)
        except Exception as exc:  # openstacksdk's errors: name the step, keep the reason
            raise CloudError(f"creating the cloud's objects failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.phase("dhcp", self._dhcp_agent)
        if self.horizon is not None:
            self.phase("horizon", self._horizon)
        self.report.steps["bring_up_total"] = round(time.monotonic() - started, 2)
        return self.report

    def phase(self, name: str, action: Callable[[], object]) -> None:
        """Run one phase of the bring-up and record how long it took."""
        started = time.monotonic()
        action()
        self.report.phases[name] = round(time.monotonic() - started, 2)

    def _check_tools(self) -> None:
        missing = [tool for tool in ("libvirtd", "virtlogd", "virsh", "qemu-system-x86_64",
                                     "swtpm", "swtpm_setup", "unshare", "nsenter", "ip",
                                     "genisoimage", "rabbitmqctl")
                   if shutil.which(tool) is None]
        if not (self.paths.venv / "bin" / "nova-compute").exists():
            missing.append(f"{self.paths.venv}/bin/nova-compute (tools/run-cloud.sh installs it)")
        if missing:
            raise CloudError(f"missing: {', '.join(missing)}")

    def _drop_backing_stores(self) -> None:
        """Drop the cloud's databases and its RabbitMQ vhost and user."""
        import psycopg2
        import pymysql

        from trusted_launch.sandbox.databases import MYSQL_ADMIN, PG_ADMIN

        with pymysql.connect(connect_timeout=5, autocommit=True, **MYSQL_ADMIN) as mysql, \
                mysql.cursor() as cursor:
            for name in MYSQL_DATABASES:
                cursor.execute(f"DROP DATABASE IF EXISTS {configs.DB_PREFIX}{name}")
        admin = psycopg2.connect(connect_timeout=5, **PG_ADMIN)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {TTP_DATABASE} WITH (FORCE)")
        admin.close()
        for command in (["delete_vhost", configs.RABBIT_VHOST],
                        ["delete_user", configs.RABBIT_USER]):
            subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, check=False)

    def _create_databases(self) -> None:
        import psycopg2
        import pymysql

        from trusted_launch.sandbox.databases import MYSQL_ADMIN, PG_ADMIN

        if not (self.paths.data / "steps").exists():
            # A state folder with no completed step: databases or a vhost left by
            # another checkout's cloud (same names) would not match this state.
            self._drop_backing_stores()
        with pymysql.connect(connect_timeout=5, autocommit=True, **MYSQL_ADMIN) as mysql, \
                mysql.cursor() as cursor:
            for name in MYSQL_DATABASES:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS {configs.DB_PREFIX}{name} "
                               "CHARACTER SET utf8mb4")
        admin = psycopg2.connect(connect_timeout=5, **PG_ADMIN)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TTP_DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {TTP_DATABASE}")
        admin.close()

    def _rabbit_vhost(self) -> None:
        vhost, user = configs.RABBIT_VHOST, configs.RABBIT_USER
        if vhost not in subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True,
                                       text=True, check=False).stdout.split():
            self.run("rabbitmq", ["rabbitmqctl", "-q", "add_vhost", vhost])
        users = subprocess.run(["rabbitmqctl", "-q", "list_users"], capture_output=True,
                               text=True, check=False).stdout
        if user not in users.split():
            # The password goes over rabbitmqctl's stdin, never onto a command line.
            subprocess.run(["rabbitmqctl", "-q", "add_user", user], check=True,
                           input=self.state.passwords["rabbit"] + "\n", text=True,
                           capture_output=True)
        self.run("rabbitmq", ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, user,
                              ".*", ".*", ".*"])

    def _conf(self, service: str, name: str) -> pathlib.Path:
        return self.paths.etc / service / name

    def _write_configs(self, choice: hypervisor.VirtChoice) -> None:
        p, s = self.paths, self.state
        configs.write_ini(self._conf("keystone", "keystone.conf"), configs.keystone(p, s))
        configs.write_ini(self._conf("glance", "glance-api.conf"), configs.glance(p, s))
        shutil.copy(p.venv / "etc" / "glance" / "glance-api-paste.ini", self._conf("glance", "."))
        configs.write_ini(self._conf("placement", "placement.conf"), configs.placement(p, s))
        configs.write_ini(self._conf("nova", "nova.conf"), configs.nova(p, s))
        shutil.copy(p.venv / "etc" / "nova" / "api-paste.ini", self._conf("nova", "."))
        configs.write_ini(self._conf("neutron", "neutron.conf"), configs.neutron(p, s))
        configs.write_ini(self._conf("neutron", "plugins/ml2/ml2_conf.ini"), configs.ml2())
        configs.write_ini(self._conf("ttp", "ttp-rpc.conf"), configs.ttp_rpc(s))
        configs.write_ini(self._conf("neutron", "dhcp_agent.ini"),
                          configs.dhcp_agent(p, DHCP_AGENT_HOST, network.HOST_INTERFACE))
        for host in self.hosts:
            configs.write_ini(self._conf("neutron", f"macvtap-{host.name}.ini"),
                              configs.macvtap_agent(host.name, network.HOST_INTERFACE))
            configs.write_ini(self._conf("nova", f"nova-compute-{host.name}.conf"),
                              configs.nova_compute(p, s, host.name, choice.libvirt_options()))
        for service in WSGI_APPS:
            self._write_gunicorn_conf(service)
        if self.nova_driver == "trusted":
            self._configure_trusted_launch()

    def _driver_marker(self) -> pathlib.Path:
        return self.paths.data / "nova-driver"

    def _restart_on_driver_change(self) -> None:
        """Stop nova-scheduler and the nova-computes when they run the other driver's
        configuration (this run starts them again on the new one)."""
        marker = self._driver_marker()
        running = marker.read_text().strip() if marker.exists() else "trusted"
        if running != self.nova_driver:
            for name in ["nova-scheduler", *(f"nova-compute-{h.name}" for h in self.hosts)]:
                if self.table.alive(name):
                    self.table.stop(name)
        marker.write_text(self.nova_driver + "\n")

    def _write_gunicorn_conf(self, service: str) -> None:
        app, _ = WSGI_APPS[service]
        self._conf(service, "gunicorn.conf.py").write_text(
            f'wsgi_app = "{app}"\nbind = "127.0.0.1:{self.state.ports[service]}"\n'
            'worker_class = "gthread"\nworkers = 1\nthreads = 8\ntimeout = 300\n')

    def _ttp_ca(self) -> pathlib.Path:
        return self.paths.etc / "ttp" / "ca.pem"

    def _configure_trusted_launch(self) -> None:
        """nova.conf's trusted-launch parts, by the command the DevStack plugin runs."""
        shared = ["--profiles", ",".join(PROFILES), "--ttp-url", self.state.url("ttp"),
                  "--ttp-ca-file", str(self._ttp_ca())]
        tool = self.paths.bin("trusted-launch")
        self.run("configure", [tool, "configure", "nova-scheduler", "--config-file",
                               str(self._conf("nova", "nova.conf")), *shared])
        for host in self.hosts:
            transport = TTP_TRANSPORTS[host.name]
            self.run("configure", [
                tool, "configure", "nova-compute", "--config-file",
                str(self._conf("nova", f"nova-compute-{host.name}.conf")), *shared,
                "--tcti", host.tcti, "--event-log", str(host.event_log),
                "--host-profile", host.profile,
                "--ak-certificate-file", str(self._ak_cert(host)),
                "--ttp-auth-token-file", str(self._host_token(host)),
                "--ttp-transport", transport, "--ttp-rpc-topic", TTP_RPC_TOPIC,
                "--ttp-receipt-key-file", str(self._receipt_key())])
            self.report.computes[host.name] = {"profile": host.profile,
                                               "ttp_transport": transport}

    def _receipt_key(self) -> pathlib.Path:
        """The TTP's receipt public key as the computes read it (fetched once the TTP runs)."""
        return self.paths.etc / "nova" / "ttp-receipt-key.pem"

    def _register(self, host: ComputeHost) -> None:
        """The operator's consent: register the host's EK at the TTP, make its host token.

        The token goes straight into a 0600 file, never through a set-up log.
        """
        manage = [self.paths.bin("trusted-launch-ttp-manage"), "--config-file",
                  str(self.paths.etc / "ttp" / "ttp.conf")]
        fingerprint = self.run("register", [self.paths.bin("trusted-launch"), "host",
                                            "ek-fingerprint", "--tcti", host.tcti]).strip()
        listed = self.run("register", [*manage, "host", "list"])
        if any(line.split()[:1] == [host.name] for line in listed.splitlines()):
            self.run("register", [*manage, "host", "remove", host.name])
        self.run("register", [*manage, "host", "add", host.name,
                              "--ek-fingerprint", fingerprint.splitlines()[-1]])
        created = subprocess.run([*manage, "token", "create", "--role", "host", "--host",
                                  host.name, "--description", "run-cloud.sh compute"],
                                 capture_output=True, text=True, env=self._env(), check=False,
                                 timeout=120)
        if created.returncode != 0:
            raise CloudError(f"register: host token for {host.name}: {created.stderr.strip()}")
        write_private_file(self._host_token(host), (created.stdout.strip() + "\n").encode())

    def _host_token(self, host: ComputeHost) -> pathlib.Path:
        return self.paths.etc / "nova" / f"ttp-token-{host.name}"

    def _tpm_state(self, host: ComputeHost) -> pathlib.Path:
        return self.paths.data / host.name / "tpm"

    def _ak_cert(self, host: ComputeHost) -> pathlib.Path:
        return self.paths.etc / "nova" / f"ak-cert-{host.name}.pem"

    def _wsgi_service(self, service: str, db_sync: Sequence[str]) -> None:
        self.once(f"{service}-db", lambda: self.run(service, db_sync))
        _, config_dir_variable = WSGI_APPS[service]
        conf_dir = self._conf(service, "")
        gunicorn = Service(service, [self.paths.bin("gunicorn")], cwd=conf_dir,
                           env=self._env(**{config_dir_variable: str(conf_dir)}))
        self.start(gunicorn, http_answers(self.state.url(service, "/")),
                   port=self.state.ports[service])

    def _keystone(self) -> None:
        conf = str(self._conf("keystone", "keystone.conf"))
        manage = self.paths.bin("keystone-manage")

        def setup() -> None:
            self.run("keystone", [manage, "--config-file", conf, "db_sync"])
            for action in ("fernet_setup", "credential_setup"):
                self.run("keystone", [manage, "--config-file", conf, action,
                                      "--keystone-user", "root", "--keystone-group", "root"])
        self.once("keystone-db", setup)
        url = self.state.url("keystone", "/v3")
        # keystone-manage bootstrap reads the admin password from the environment.
        bootstrap = [manage, "--config-file", conf, "bootstrap",
                     "--bootstrap-region-id", configs.REGION, "--bootstrap-admin-url", url,
                     "--bootstrap-public-url", url, "--bootstrap-internal-url", url]
        self.once("keystone-bootstrap", lambda: subprocess.run(
            bootstrap, check=True, capture_output=True,
            env=self._env(OS_BOOTSTRAP_PASSWORD=self.state.passwords["admin"])))
        conf_dir = self._conf("keystone", "")
        gunicorn = Service("keystone", [self.paths.bin("gunicorn")], cwd=conf_dir,
                           env=self._env(OS_KEYSTONE_CONFIG_DIR=str(conf_dir)))
        self.start(gunicorn, http_answers(url), port=self.state.ports["keystone"])
        identity.write_clouds_yaml(self.paths.clouds_yaml, self.state)
        self.once("keystone-catalog",
                  lambda: identity.ensure_catalog(self.connection(), self.state))

    def _nova_control(self) -> None:
        conf = str(self._conf("nova", "nova.conf"))
        manage = [self.paths.bin("nova-manage"), "--config-file", conf]

        def setup() -> None:
            self.run("nova", [*manage, "api_db", "sync"])
            self.run("nova", [*manage, "cell_v2", "map_cell0", "--database_connection",
                              configs.database_url("nova_cell0")])
            # cell1 takes nova.conf's database and transport URL (no password on a command line)
            self.run("nova", [*manage, "cell_v2", "create_cell", "--name", "cell1"])
            self.run("nova", [*manage, "db", "sync"])
        self.once("nova-db", setup)
        conf_dir = self._conf("nova", "")
        api = Service("nova", [self.paths.bin("gunicorn")], cwd=conf_dir,
                      env=self._env(OS_NOVA_CONFIG_DIR=str(conf_dir)),
                      config_files=(pathlib.Path(conf),))
        self.start(api, http_answers(self.state.url("nova", "/")), port=self.state.ports["nova"])
        for binary in ("nova-conductor", "nova-scheduler"):
            service = Service(binary, [self.paths.bin(binary), "--config-file", conf],
                              env=self._env(), config_files=(pathlib.Path(conf),))
            self.start_nova(service, binary, "*")

    def _nova_service_up(self, binary: str, host: str, since: datetime
                         ) -> Callable[[], bool]:
        """A check: ``binary`` on ``host`` ("*": any) is up and reported after ``since``
        (UTC)."""
        conn = self.connection()

        def reported_since(updated_at: str | None) -> bool:
            try:
                return datetime.fromisoformat(updated_at or "").replace(tzinfo=None) >= since
            except ValueError:
                return False

        def check() -> bool:
            return any(s.binary == binary and s.state == "up" and host in ("*", s.host)
                       and reported_since(s.updated_at) for s in conn.compute.services())
        return check

    def _neutron(self) -> None:
        confs = ["--config-file", str(self._conf("neutron", "neutron.conf")),
                 "--config-file", str(self._conf("neutron", "plugins/ml2/ml2_conf.ini"))]
        self.once("neutron-db", lambda: self.run(
            "neutron", [self.paths.bin("neutron-db-manage"), *confs, "upgrade", "heads"],
            timeout=900))
        conf_dir = self._conf("neutron", "")
        api = Service("neutron", [self.paths.bin("gunicorn")], cwd=conf_dir,
                      env=self._env(OS_NEUTRON_CONFIG_DIR=str(conf_dir)))
        self.start(api, http_answers(self.state.url("neutron", "/")),
                   port=self.state.ports["neutron"])
        rpc = Service("neutron-rpc-server", [self.paths.bin("neutron-rpc-server"), *confs],
                      env=self._env())
        self.start(rpc, self._neutron_rpc_consumes(), HTTP_TIMEOUT_S)

    def _neutron_rpc_consumes(self) -> Callable[[], bool]:
        """A check: the RPC server consumes the agents' state-report queue."""
        def check() -> bool:
            queues = subprocess.run(
                ["rabbitmqctl", "-q", "list_queues", "-p", configs.RABBIT_VHOST, "name",
                 "consumers"], capture_output=True, text=True, check=False).stdout
            return any(line.split()[0] == "q-reports-plugin" and line.split()[1] != "0"
                       for line in queues.splitlines() if len(line.split()) == 2)
        return check

    def _ttp(self) -> None:
        ttp_dir = self.paths.etc / "ttp"
        data_dir = self.paths.data / "ttp"
        conf = ttp_dir / "ttp.conf"
        ca = LocalCA(self.paths.data / "swtpm-ca")
        for host in self.hosts:  # the TTP trusts the EK CA these states are made with
            manufacture_once(self._tpm_state(host), ca)
        if not (ttp_dir / "ttp-server.pem").exists():
            authority = CertificateAuthority(ttp_dir, name="trusted-launch sandbox cloud CA")
            authority.issue("ttp-server")
        self.run("ttp", [self.paths.bin("trusted-launch"), "configure", "ttp", "--config-file",
                         str(conf), "--bind-host", "127.0.0.1", "--bind-port",
                         str(self.state.ports["ttp"]), "--cert-file",
                         str(ttp_dir / "ttp-server.pem"), "--key-file",
                         str(ttp_dir / "ttp-server.key"), "--database-url",
                         f"postgresql+psycopg2://postgres@127.0.0.1:5432/{TTP_DATABASE}",
                         "--data-dir", str(data_dir), "--ek-ca-files",
                         ",".join(str(path) for path in ca.ek_ca_certs),
                         "--profile-dir", str(REPO / "examples" / "profiles"),
                         "--rpc-ttp-url", self.state.url("ttp"), "--rpc-topic", TTP_RPC_TOPIC])
        self.once("ttp-db", lambda: self.run("ttp", [
            self.paths.bin("trusted-launch-ttp-manage"), "--config-file", str(conf),
            "db", "sync"]))
        service = Service("ttp", [self.paths.bin("trusted-launch-ttp"), "--config-file",
                                  str(conf)], env=self._env(), config_files=(conf,))
        self.start(service, http_answers(self.state.url("ttp", "/"),
                                         verify=str(self._ttp_ca())),
                   port=self.state.ports["ttp"])
        # The computes' copy of the TTP's receipt key, by the command DevStack runs too.
        self.run("ttp", [self.paths.bin("trusted-launch"), "configure", "ttp-receipt-key",
                         "--ttp-url", self.state.url("ttp"), "--ttp-ca-file",
                         str(self._ttp_ca()), "--out", str(self._receipt_key())])

    def _ttp_rpc(self) -> None:
        """trusted-launch-ttp-rpc on the cloud's RabbitMQ, beside the HTTPS TTP (same
        ttp.conf, database and keys; its bus in ttp-rpc.conf)."""
        confs = (self.paths.etc / "ttp" / "ttp.conf", self._conf("ttp", "ttp-rpc.conf"))
        service = Service("ttp-rpc", [self.paths.bin("trusted-launch-ttp-rpc"),
                                      *(arg for conf in confs
                                        for arg in ("--config-file", str(conf)))],
                          env=self._env(), config_files=confs)
        self.start(service, self._ttp_rpc_answers())

    def _ttp_rpc_answers(self) -> Callable[[], bool]:
        """A check: a real RPC call on the TTP's topic is answered (a host no one enrolled
        is refused by name: the server is serving)."""
        from trusted_launch.compute.errors import AttestationRefused, TTPUnreachable
        from trusted_launch.compute.ttp_rpc_client import RPCTTPClient
        from trusted_launch.sandbox.ttp_rpc_process import PROBE_HOST, rpc_transport

        client = RPCTTPClient(self.state.url("ttp"), rpc_transport(configs.transport_url(
            self.state)), topic=TTP_RPC_TOPIC, timeout=5.0, retries=0)

        def check() -> bool:
            try:
                client.host_challenge(PROBE_HOST)
            except AttestationRefused:
                return True
            except TTPUnreachable:
                return False
            return True
        return check

    def _horizon(self) -> None:
        """The dashboard with the trusted-launch plugin (doc/dashboard.md)."""
        assert self.horizon is not None
        self.horizon.configure(self._ttp_ca())
        if not self.horizon.reader_token_file.exists():
            make_reader_token([self.paths.bin("trusted-launch-ttp-manage"), "--config-file",
                               str(self.paths.etc / "ttp" / "ttp.conf")],
                              self.horizon.reader_token_file, self._env())
        service = self.horizon.service()
        if not self.table.alive(service.name):
            self.horizon.prepare_static(
                lambda argv, env, timeout: self.run("horizon", argv, timeout, env))
        self.start(service, http_answers(self.state.url("horizon", LOGIN_PATH),
                                         ok_statuses=(200,)),
                   port=self.state.ports["horizon"])

    def _compute_host(self, host: ComputeHost) -> None:
        tpm = swtpm_service(host, self._tpm_state(host))
        _, fresh = self.table.start(tpm)
        seconds = wait_until(tpm.name, tcp_listens(host.swtpm_port + 1), 30, self.table)
        self.report.service(tpm.name, seconds, fresh, host.swtpm_port)
        if fresh or not self._ak_cert(host).exists():
            # A started swtpm has measured nothing: replay the host's firmware log.
            boot(host.swtpm_port, host.event_log)
            self._register(host)
            self.run("enroll", [self.paths.bin("trusted-launch"), "host", "enroll",
                                "--ttp", self.state.url("ttp"), "--host", host.name,
                                "--tcti", host.tcti, "--ttp-ca-file", str(self._ttp_ca()),
                                "--ttp-token-file", str(self._host_token(host)),
                                "--ak-cert-out", str(self._ak_cert(host))])
        root = self.paths.data / host.name / "libvirt"
        hypervisor.prepare_libvirt_root(root)
        libvirtd = hypervisor.libvirtd_service(f"libvirtd-{host.name}", host.name, root)
        self.start(libvirtd, lambda: hypervisor.virsh(
            self.table.pid(libvirtd.name), "version", timeout=10).returncode == 0, 60)
        agent = Service(f"macvtap-agent-{host.name}", [
            self.paths.bin("python"), "-m", "trusted_launch.sandbox.cloud.macvtap_agent",
            "--config-file", str(self._conf("neutron", "neutron.conf")),
            "--config-file", str(self._conf("neutron", f"macvtap-{host.name}.ini"))],
            env=self._env())
        self.start(agent, self._agent_alive(host.name), HTTP_TIMEOUT_S)
        conf = self._conf("nova", f"nova-compute-{host.name}.conf")
        (self.paths.data / host.name / "instances").mkdir(parents=True, exist_ok=True)
        compute = Service(f"nova-compute-{host.name}", hypervisor.in_namespace(
            self.table.pid(libvirtd.name),
            [self.paths.bin("nova-compute"), "--config-file", str(conf)]), env=self._env(),
            config_files=(conf, self._receipt_key()))
        self.start_nova(compute, "nova-compute", host.name)

    def _agent_alive(self, host: str, binary: str = "neutron-macvtap-agent",
                     ) -> Callable[[], bool]:
        conn = self.connection()

        def check() -> bool:
            return any(agent.host == host and agent.is_alive
                       for agent in conn.network.agents(binary=binary))
        return check

    def _cloud_objects(self) -> None:
        conn = self.connection()
        names = {host.name for host in self.hosts}
        wait_until("nova hypervisors", lambda: names <= {
            h.name for h in conn.compute.hypervisors()}, COMPUTE_TIMEOUT_S)
        if any(self.report.services[f"nova-compute-{h.name}"]["started"] for h in self.hosts):
            self.run("nova", [self.paths.bin("nova-manage"), "--config-file",
                              str(self._conf("nova", "nova.conf")), "cell_v2", "discover_hosts"])
        for profile in PROFILES:
            aggregate = conn.compute.find_aggregate(f"sp-{profile}") or \
                conn.compute.create_aggregate(name=f"sp-{profile}")
            conn.compute.set_aggregate_metadata(aggregate, {"trusted_sp": profile})
            for host in self.hosts:
                if host.profile == profile and host.name not in (aggregate.hosts or []):
                    conn.compute.add_host_to_aggregate(aggregate, host.name)
        for name, (vcpus, ram, disk) in FLAVORS.items():
            if conn.compute.find_flavor(name) is None:
                conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk)
        image = conn.image.find_image(TINY_IMAGE)
        if image is not None and image.status != "active":  # an upload cut short
            conn.image.delete_image(image)
            image = None
        if image is None:
            probe = hypervisor.probe_image(self.paths.data / "tiny.img")
            conn.create_image(TINY_IMAGE, filename=str(probe), disk_format="raw",
                              container_format="bare", visibility="public", wait=True)
        self._tenant_security_group()
        net = conn.network.find_network(NETWORK) or conn.network.create_network(
            name=NETWORK, shared=True, provider_network_type="flat",
            provider_physical_network=configs.PHYSNET)
        subnet = conn.network.find_subnet(SUBNET)
        if subnet is None:
            start, end = network.ALLOCATION_POOL
            conn.network.create_subnet(
                name=SUBNET, network_id=net.id, ip_version=4, cidr=network.TENANT_CIDR,
                gateway_ip=network.GATEWAY, enable_dhcp=True,
                allocation_pools=[{"start": start, "end": end}])
        elif not subnet.is_dhcp_enabled:  # made by a run from before the DHCP agent
            conn.network.update_subnet(subnet, enable_dhcp=True)

    def _dhcp_dir(self) -> pathlib.Path:
        return self.paths.data / "neutron" / "dhcp"  # the agent's dhcp_confs default

    def _dhcp_agent(self) -> None:
        """neutron-dhcp-agent, serving tl-net; ready when alive in the API and its dnsmasq runs.

        A network whose subnet got DHCP before any DHCP agent was alive is scheduled
        to none (the agent's first sync can also come before its first report), so
        the network is added to the agent here, as an operator would
        (``openstack network agent add network --dhcp``), unless it is hosted already.
        """
        agent = Service(DHCP_AGENT, [
            self.paths.bin(DHCP_AGENT),
            "--config-file", str(self._conf("neutron", "neutron.conf")),
            "--config-file", str(self._conf("neutron", "dhcp_agent.ini"))], env=self._env())
        _, started = self.table.start(agent)
        seconds = wait_until(DHCP_AGENT, self._agent_alive(DHCP_AGENT_HOST, DHCP_AGENT),
                             HTTP_TIMEOUT_S, self.table)
        conn = self.connection()
        net = conn.network.find_network(NETWORK)
        dhcp_agent = next(iter(conn.network.agents(binary=DHCP_AGENT, host=DHCP_AGENT_HOST)))
        if net.id not in {hosted.id for hosted in
                          conn.network.dhcp_agent_hosting_networks(dhcp_agent)}:
            conn.network.add_dhcp_agent_to_network(dhcp_agent, net)
        seconds += wait_until(DHCP_AGENT, lambda: dhcp.dnsmasq_pid(self._dhcp_dir(), net.id)
                              is not None, HTTP_TIMEOUT_S, self.table)
        self.report.service(DHCP_AGENT, seconds, started)

    def _tenant_security_group(self) -> None:
        """The demo project's default group lets the tenant's namespace reach its guests."""
        demo = self.connection(identity.DEMO_CLOUD)
        group = next(iter(demo.network.security_groups(name="default",
                                                       project_id=demo.current_project_id)))
        existing = {(rule.protocol, rule.port_range_min) for rule in
                    demo.network.security_group_rules(security_group_id=group.id,
                                                      direction="ingress")}
        for rule in TENANT_INGRESS:
            if (rule["protocol"], rule.get("port_range_min")) not in existing:
                demo.network.create_security_group_rule(
                    security_group_id=group.id, direction="ingress", ethertype="IPv4",
                    remote_ip_prefix=network.TENANT_CIDR, **rule)

    def domain_xml(self) -> dict[str, str]:
        """``{"<host>-<domain>": virsh dumpxml --security-info}`` of every guest each
        compute's libvirtd defines (what a secrets scan searches)."""
        dumps = {}
        for host in self.hosts:
            pid = self.table.pid(f"libvirtd-{host.name}")
            if pid is None:
                continue
            for domain in hypervisor.virsh(pid, "list", "--all", "--name").stdout.split():
                xml = hypervisor.virsh(pid, "dumpxml", "--security-info", domain)
                if xml.returncode == 0:
                    dumps[f"{host.name}-{domain}"] = xml.stdout
        return dumps

    # -- tear-down --------------------------------------------------------------------
    def down(self) -> list[str]:
        """Destroy the guests, stop every process, remove the network; what was stopped."""
        stopped = []
        for host in self.hosts:
            pid = self.table.pid(f"libvirtd-{host.name}")
            if pid is None:
                continue
            if self.table.alive(f"nova-compute-{host.name}"):  # before it sees guests vanish
                self.table.stop(f"nova-compute-{host.name}")
                stopped.append(f"nova-compute-{host.name}")
            for domain in hypervisor.virsh(pid, "list", "--all", "--name").stdout.split():
                hypervisor.virsh(pid, "destroy", domain)
                hypervisor.virsh(pid, "undefine", domain, "--nvram")
        for name in self.table.names():
            self.table.stop(name)
            stopped.append(name)
        stopped += dhcp.stop_all(self._dhcp_dir())  # dnsmasq outlives its agent
        network.delete()
        return stopped

    def purge(self) -> None:
        """After :meth:`down`: drop the databases, the RabbitMQ vhost and user, the state.

        The logs stay (in log/); the next bring-up starts from nothing.
        """
        self._drop_backing_stores()
        for path in (self.paths.etc, self.paths.data, self.paths.run, self.paths.state_file):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
