"""The Horizon dashboard plugin in a real browser against the real cloud.

Headless Chromium from Debian (``/usr/bin/chromium``, ``chromedriver``;
bindep.txt) driven by Selenium logs in to the Horizon that tools/run-cloud.sh
serves: the demo tenant sees a trusted instance (accepted, and its receipt
verified in the browser from the tenant's nonce file) and a plain one shown as
such, and opens the launch form and launches through it; a launch the TTP
refused is shown with its fault's reason; the admin sees tl-compute-high meeting high
and tl-compute-low not. Screenshots go to ``.cloud/log/screenshots/`` (the path
is printed). No secret (N, the receipt proof, the launch token, passwords, the
TTP reader token) may appear in a page's source or in the dashboard's log.
"""

from __future__ import annotations

import base64
import pathlib
import shutil
import time
import uuid

import pytest

from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.crypto.receipt import receipt_proof
from trusted_launch.sandbox.cloud import bringup, identity, network
from trusted_launch.sandbox.cloud.horizon import Horizon, default_venv
from trusted_launch.sandbox.cloud.layout import CloudState
from trusted_launch.sandbox.cloud.scenarios import (
    Clients,
    CloudTarget,
    Launch,
)

pytestmark = pytest.mark.timeout(2400)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 300  # Horizon's pages make several API calls; the machine is loaded
HIGH_HOST, LOW_HOST = "tl-compute-high", "tl-compute-low"


@pytest.fixture(scope="module")
def dashboard(cloud_report):
    """The dashboard's URL and the secrets no page may show."""
    url = cloud_report.get("horizon_url")
    if not url:
        pytest.skip("this cloud was brought up without Horizon (--no-horizon)")
    return url.rstrip("/")


@pytest.fixture(scope="module")
def target(cloud) -> CloudTarget:
    """The cloud, launching the tiny boot-sector image (fast under TCG)."""
    paths = cloud.paths
    state = CloudState.load_or_create(paths.state_file)
    return CloudTarget(
        openstack=paths.bin("openstack"), trusted_launch=paths.bin("trusted-launch"),
        clouds_yaml=str(paths.clouds_yaml), admin_cloud=identity.ADMIN_CLOUD,
        demo_cloud=identity.DEMO_CLOUD, network=bringup.NETWORK, namespace=network.NAMESPACE,
        ttp_url=state.url("ttp"), ttp_ca_file=str(paths.etc / "ttp" / "ca.pem"),
        flavor="tl.tiny", image=bringup.TINY_IMAGE, image_file=str(paths.data / "tiny.img"),
        high_host=HIGH_HOST, low_host=LOW_HOST, work_dir=str(paths.data / "dashboard-test"))


@pytest.fixture(scope="module")
def servers(target):
    """A trusted (profile high) and a plain instance of the demo tenant, both ACTIVE."""
    clients = Clients(target)
    suffix = uuid.uuid4().hex[:6]
    nonce_dir = pathlib.Path(target.work_dir) / "nonces"
    created = clients.openstack(
        "trusted", "server", "create", f"hz-trusted-{suffix}", "--image", target.image,
        "--flavor", target.flavor, "--network", target.network, "--ttp", target.ttp_url,
        "--sp", "high", "--ca-file", target.ttp_ca_file, "--nonce-dir", str(nonce_dir))
    trusted = Launch(f"hz-trusted-{suffix}", created["id"], created["nonce_file"])
    plain_created = clients.openstack("server", "create", "--image", target.image, "--flavor",
                                      target.flavor, "--network", target.network,
                                      f"hz-plain-{suffix}")
    plain = Launch(f"hz-plain-{suffix}", plain_created["id"])
    try:
        for launch in (trusted, plain):
            clients.wait_for(launch.server_id, {"ACTIVE"})
        yield {"trusted": trusted, "plain": plain, "clients": clients}
    finally:
        for launch in (trusted, plain):
            clients.openstack("server", "delete", launch.server_id, output=False)


def high_token(clients, target: CloudTarget) -> dict:
    """A profile-high launch token (and its nonce file) made by the tenant's CLI."""
    return clients.openstack("trusted", "token", "create", "--ttp", target.ttp_url, "--sp",
                             "high", "--ca-file", target.ttp_ca_file, "--nonce-dir",
                             str(pathlib.Path(target.work_dir) / "nonces"), "--image",
                             target.image)


@pytest.fixture(scope="module")
def refused(target, servers):
    """A profile-high launch the admin forces onto tl-compute-low: the TTP refuses it."""
    clients = servers["clients"]
    made = high_token(clients, target)
    name = f"hz-refused-{uuid.uuid4().hex[:6]}"
    created = clients.openstack(
        "server", "create", "--image", target.image, "--flavor", target.flavor, "--network",
        target.network, "--config-drive", "True", "--availability-zone", f"nova:{LOW_HOST}",
        *made["server_create_arguments"].split(), name, admin=True)
    try:
        server = clients.wait_for(created["id"], {"ERROR"})
        yield {"name": name, "id": created["id"], "fault": server["fault"].get("message", ""),
               "token": made["token"], "nonce": read_nonce_file(made["nonce_file"]).hex()}
    finally:
        clients.openstack("server", "delete", created["id"], admin=True, output=False)


@pytest.fixture(scope="module")
def secrets_(cloud, servers, target):
    """Every secret value a page or the dashboard's log must never hold."""
    state = CloudState.load_or_create(cloud.paths.state_file)
    nonce = read_nonce_file(servers["trusted"].nonce_file)
    token = servers["clients"].openstack("server", "show", servers["trusted"].server_id
                                         )["properties"]["trusted_token"]
    horizon = Horizon(cloud.paths, state, default_venv())
    values = {"N (hex)": nonce.hex(), "N (base64)": base64.b64encode(nonce).decode(),
              "receipt proof": base64.urlsafe_b64encode(receipt_proof(nonce)).decode()
              .rstrip("="), "launch token": token,
              "TTP reader token": horizon.reader_token_file.read_text().strip()}
    values.update({f"{name} password": value for name, value in state.passwords.items()})
    return values


@pytest.fixture(scope="module")
def screenshots(cloud) -> pathlib.Path:
    directory = cloud.paths.log / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {directory}")
    return directory


@pytest.fixture(scope="module")
def browser():
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (bindep.txt: chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1500,1000", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()


def wait_for(driver, css: str, timeout: float = PAGE_TIMEOUT_S):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def log_in(driver, dashboard: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{dashboard}/auth/login/")
    wait_for(driver, "#id_username").send_keys(user)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(driver, "#navbar-collapse, .navbar")


def choose(driver, field_id: str, wanted: str) -> None:
    """Pick the option shown as (or valued) ``wanted`` in one of Horizon's themable
    selects, as a user does: in its dropdown.

    The native ``<select>`` is hidden once Horizon's script has made the dropdown
    (``select-initialized``), so the dropdown is what a user, and this test, clicks.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    widget = wait_for(driver, f".themable-select.select-initialized #{field_id}").find_element(
        By.XPATH, "./ancestor::div[contains(@class, 'themable-select')]")
    widget.find_element(By.CSS_SELECTOR, "button.dropdown-toggle").click()
    option = next(link for link in widget.find_elements(By.CSS_SELECTOR, ".dropdown-menu a")
                  if wanted in (link.get_attribute("textContent").strip(),
                                link.get_attribute("data-select-value")))
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        expected_conditions.element_to_be_clickable(option)).click()
    chosen = Select(driver.find_element(By.ID, field_id)).first_selected_option
    assert wanted in (chosen.get_attribute("textContent").strip(),
                      chosen.get_attribute("value")), f"{field_id}: {wanted} not chosen"


def check_page(driver, secrets: dict, shot: pathlib.Path) -> str:
    """Save a screenshot; the page's source holds none of the secrets."""
    driver.save_screenshot(str(shot))
    source = driver.page_source
    leaked = [name for name, value in secrets.items() if value and value in source]
    assert not leaked, f"{driver.current_url} shows {', '.join(leaked)}"
    return source


def row(driver, css: str):
    return wait_for(driver, css)


def test_tenant_sees_trusted_and_plain_instances(browser, dashboard, servers, secrets_,
                                                 screenshots, cloud):
    from selenium.webdriver.common.by import By

    state = CloudState.load_or_create(cloud.paths.state_file)
    log_in(browser, dashboard, "demo", state.passwords["demo"])
    browser.get(f"{dashboard}/project/trusted_launch/")
    trusted = row(browser, f"tr[data-server-id='{servers['trusted'].server_id}']")
    plain = row(browser, f"tr[data-server-id='{servers['plain'].server_id}']")
    assert "tl-verdict-accepted" in trusted.get_attribute("class")
    assert trusted.find_element(By.CSS_SELECTOR, ".tl-verdict").text.strip() == "accepted"
    assert "high" in trusted.find_element(By.CSS_SELECTOR, ".tl-host-level").text
    assert "tl-verdict-plain" in plain.get_attribute("class")
    assert "not a trusted launch" in plain.find_element(By.CSS_SELECTOR, ".tl-verdict").text
    check_page(browser, secrets_, screenshots / "tenant-instances.png")

    # The receipt, verified in the browser from the tenant's nonce file.
    trusted.find_element(By.CSS_SELECTOR, ".tl-nonce-file").send_keys(
        str(pathlib.Path(servers["trusted"].nonce_file).resolve()))
    verified = wait_for(browser, f"tr[data-server-id='{servers['trusted'].server_id}'] "
                                 ".tl-verified, .tl-unverified, .tl-receipt-result.text-danger",
                        timeout=120)
    assert "tl-verified" in verified.get_attribute("class"), verified.text
    assert verified.text.startswith("yes")
    receipt = trusted.find_element(By.CSS_SELECTOR, ".tl-receipts").text
    assert HIGH_HOST in receipt and "trusted" in receipt
    assert "meets high" in trusted.find_element(By.CSS_SELECTOR, ".tl-host-level").text
    check_page(browser, secrets_, screenshots / "tenant-receipt-verified.png")


def test_tenant_launch_form_offers_the_profiles(browser, dashboard, secrets_, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard}/project/trusted_launch/launch/")
    profile = wait_for(browser, "#id_profile")
    names = [option.get_attribute("value")
             for option in profile.find_elements(By.TAG_NAME, "option")]
    assert names[:3] == ["high", "medium", "low"]
    token = browser.find_element(By.ID, "id_token")
    assert token.get_attribute("autocomplete") == "off"
    assert browser.find_elements(By.ID, "id_nonce") == []  # N is never asked for
    check_page(browser, secrets_, screenshots / "tenant-launch-form.png")


def test_a_token_that_is_not_a_launch_token_is_refused_by_the_form(browser, dashboard,
                                                                    secrets_, screenshots):
    from selenium.webdriver.common.by import By

    browser.get(f"{dashboard}/project/trusted_launch/launch/")
    wait_for(browser, "#id_name").send_keys("hz-form-refused")
    browser.find_element(By.ID, "id_token").send_keys("not-a-launch-token")
    browser.find_element(By.XPATH, "//form//*[@type='submit' and (@value='Launch' or "
                                   "normalize-space()='Launch')]").click()
    wait_for(browser, ".has-error, .error, .alert-danger")
    assert "This is not a launch token" in browser.page_source
    assert "not-a-launch-token" not in browser.page_source  # the field is not echoed back
    check_page(browser, secrets_, screenshots / "tenant-launch-form-refused.png")


def test_tenant_launches_through_the_form_and_sees_it_accepted(browser, dashboard, target,
                                                                servers, secrets_, screenshots):
    """A token made on the tenant's side, pasted into the form: the instance boots trusted."""
    from selenium.webdriver.common.by import By

    clients = servers["clients"]
    made = high_token(clients, target)
    name = f"hz-form-{uuid.uuid4().hex[:6]}"
    secrets = {**secrets_, "form launch token": made["token"],
               "form N": read_nonce_file(made["nonce_file"]).hex()}
    browser.get(f"{dashboard}/project/trusted_launch/launch/")
    wait_for(browser, "#id_name").send_keys(name)
    choose(browser, "id_image", target.image)
    choose(browser, "id_flavor", target.flavor)
    choose(browser, "id_network", target.network)
    choose(browser, "id_profile", "high")
    browser.find_element(By.ID, "id_token").send_keys(made["token"])
    browser.find_element(By.XPATH, "//form//*[@type='submit' and (@value='Launch' or "
                                   "normalize-space()='Launch')]").click()
    wait_for(browser, "#tl-instances")
    server_id = None
    try:
        deadline = time.monotonic() + 900
        while True:
            browser.get(f"{dashboard}/project/trusted_launch/")
            rows = browser.find_elements(By.CSS_SELECTOR, f"tr[data-server-name='{name}']")
            assert rows, f"{name} is not listed after the form's launch"
            server_id = rows[0].get_attribute("data-server-id")
            verdict = rows[0].get_attribute("class")
            if "tl-verdict-pending" not in verdict or time.monotonic() > deadline:
                break
            time.sleep(10)
        assert "tl-verdict-accepted" in verdict, rows[0].text
        assert rows[0].find_element(By.XPATH, "./td[3]").text == "high"
        check_page(browser, secrets, screenshots / "tenant-form-launch-accepted.png")
        shown = clients.openstack("server", "show", server_id)
        assert shown["properties"]["trusted_ttp"] == target.ttp_url
        assert shown["properties"]["trusted_sp"] == "high"
    finally:
        if server_id:
            clients.openstack("server", "delete", server_id, output=False)


def test_refused_launch_shown_with_the_fault_reason(browser, dashboard, cloud, refused,
                                                     secrets_, screenshots):
    from selenium.webdriver.common.by import By

    state = CloudState.load_or_create(cloud.paths.state_file)
    log_in(browser, dashboard, "admin", state.passwords["admin"])
    browser.get(f"{dashboard}/project/trusted_launch/")  # the admin project's instances
    refused_row = row(browser, f"tr[data-server-id='{refused['id']}']")
    assert "tl-verdict-refused" in refused_row.get_attribute("class")
    reason = refused_row.find_element(By.CSS_SELECTOR, ".tl-reason").text
    assert reason and reason in refused["fault"], (reason, refused["fault"])
    secrets = {**secrets_, "refused launch token": refused["token"],
               "refused N": refused["nonce"]}
    check_page(browser, secrets, screenshots / "admin-project-refused-launch.png")


def test_admin_sees_high_host_meeting_high_and_low_host_not(browser, dashboard, cloud,
                                                             secrets_, screenshots):
    from selenium.webdriver.common.by import By

    state = CloudState.load_or_create(cloud.paths.state_file)
    log_in(browser, dashboard, "admin", state.passwords["admin"])
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:  # the first periodic quotes may still be on their way after a bring-up
        browser.get(f"{dashboard}/admin/trusted_hosts/")
        high = row(browser, f"tr[data-host='{HIGH_HOST}']")
        if "tl-state-trusted" in high.get_attribute("class") or time.monotonic() > deadline:
            break
        time.sleep(10)
    low = row(browser, f"tr[data-host='{LOW_HOST}']")
    assert "tl-state-trusted" in high.get_attribute("class"), high.text
    assert high.find_element(By.CSS_SELECTOR, ".tl-profile-met").text == "high"
    assert high.get_attribute("data-meets") == "yes"
    assert low.find_element(By.CSS_SELECTOR, ".tl-profile-met").text != "high"
    chart = browser.find_element(By.CSS_SELECTOR, ".tl-chart svg")
    assert "1/2" in chart.get_attribute("outerHTML")  # one of two hosts meets high
    check_page(browser, secrets_, screenshots / "admin-trusted-hosts.png")


def test_dashboard_log_holds_no_secret(cloud, secrets_, browser):
    log = (cloud.paths.log / "horizon.log").read_text(errors="replace")
    assert "/project/trusted_launch/" in log  # the log is the dashboard's, and it was used
    leaked = [name for name, value in secrets_.items() if value and value in log]
    assert not leaked, f"horizon.log holds {', '.join(leaked)}"


def test_report_names_the_dashboard(cloud_report):
    service = cloud_report["services"]["horizon"]
    port = int(cloud_report["horizon_url"].rstrip("/").rsplit(":", 1)[1])
    assert service["port"] == port
    assert service["ready_s"] >= 0
