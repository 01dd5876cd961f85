"""The notebooks' latent sliders as a user sees them: in a real browser.

Voila runs a notebook in a kernel on this interpreter and serves the page on 127.0.0.1; headless
Chromium opens it in a 1400 x 1000 viewport, moves the *humour* slider from one end to the other
with the keyboard (Home, then End, on the focused handle) and reads the face shown before and after
(screenshots of the <img> element, decoded with Pillow). The face must change visibly, be shown at
its own size (not stretched to the output's width) and fit on one screen with the sliders.

- ``notebooks/01_frey_faces.ipynb`` with its original settings (100 epochs on 1800 Frey faces):
  the change must also be the one the notebook printed, computed in the kernel.
- ``notebooks/02_flexible_vae.ipynb`` in smoke-run mode (``VAECPP_FAST=1``: its full run trains
  on MNIST for minutes before the Frey faces' sliders): the same page mechanics on another model
  (a Gaussian likelihood, sliders from -10 to 10 in steps of 0.5).

Offline: Chromium resolves no host name but 127.0.0.1 (a CDN request would fail), the widget
manager comes from Voila's own files, and the test checks that the browser asked for nothing
elsewhere. Skips, saying why, without Chromium, chromedriver, Selenium or Voila (``.ci/run``
installs them) or without the data the notebook reads.
"""

import base64
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest

# What the machine must have, cheapest checks first (Debian: chromium, chromium-driver).
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                None)
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("needs headless Chromium and its driver: apt-get install chromium chromium-driver "
                f"(found chromium: {CHROMIUM}, chromedriver: {CHROMEDRIVER})",
                allow_module_level=True)
pytest.importorskip("voila", reason="voila is not installed (pip install '.[test]')")
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install '.[test]')")
Image = pytest.importorskip("PIL.Image")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# The kernel spec and environment of the notebook tests (kernel_specs, notebook_env: fixtures).
from test_notebooks import KERNEL, NOTEBOOKS, _missing, kernel_specs, notebook_env  # noqa: E402,F401


@dataclasses.dataclass(frozen=True)
class Case:
    """A notebook with latent sliders and what its page must show."""
    stem: str
    fast: bool            # smoke-run mode (VAECPP_FAST=1), else the original settings
    needs: tuple          # the data it reads (test_notebooks._missing)
    humour: tuple         # the humour slider's two ends
    min_change: float     # mean absolute pixel change from one end to the other
    trained: str = ""     # text the page shows after full-settings training
    printed: bool = False  # the notebook prints the change it computed

    @property
    def path(self):
        return next(p for p in NOTEBOOKS if p.stem == self.stem)


CASES = [
    Case("01_frey_faces", fast=False, needs=("frey",), humour=(-15, 15), min_change=8 / 255,
         trained="after 100 epochs", printed=True),
    Case("02_flexible_vae", fast=True, needs=("mnist", "frey"), humour=(-10, 10),
         min_change=2 / 255),
]
VIEWPORT = (1400, 1000)
FACE = (20 * 8, 28 * 8)  # the notebooks' 28 x 20 faces at zoom 8: (width, height) in CSS pixels
PAGE_TIMEOUT = 900  # seconds for Voila to run the notebook (training: under a minute when idle)
WIDGET_TIMEOUT = 120  # seconds for the widgets to render once the page has loaded
REDRAW_TIMEOUT = 60  # seconds for one slider move to come back as a new picture
# Voila's "lab" template links Font Awesome's stylesheets from a CDN (icons for buttons; the
# sliders and the image use none). Offline they fail at once; nothing else may leave 127.0.0.1.
ICON_STYLESHEETS = "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@"


def _widgets_extension_root():
    """The share/jupyter folder holding ipywidgets' JupyterLab extension.

    Voila looks for it (to load its own ipywidgets-8 manager and not the ipywidgets-7 one) only in
    this interpreter's prefix, the user's and the system's; a virtual environment that takes
    ipywidgets from the system's site-packages (``--system-site-packages``) has it elsewhere.
    """
    from importlib import metadata

    dist = metadata.distribution("jupyterlab_widgets")
    for name in dist.files or ():
        if str(name).endswith("labextensions/@jupyter-widgets/jupyterlab-manager/package.json"):
            return str(pathlib.Path(dist.locate_file(name)).resolve().parents[3])
    pytest.skip("jupyterlab_widgets has no JupyterLab extension (pip install 'ipywidgets>=8')")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=CASES, ids=[c.stem for c in CASES])
def case(request):
    return request.param


@pytest.fixture
def voila(case, kernel_specs, notebook_env, monkeypatch, tmp_path):  # noqa: F811
    """Voila serving the case's notebook on 127.0.0.1; yields (url, log path)."""
    reason = _missing(case.needs)
    if reason:
        pytest.skip(reason)
    if not case.fast:
        monkeypatch.delenv("VAECPP_FAST")  # the original settings (01: 100 epochs, 1800 faces)
    monkeypatch.setenv("VAECPP_WEIGHTS", str(tmp_path / "weights"))  # train, never load or keep
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    # The only kernel Voila may start runs this interpreter: the notebooks ask for "python3", which
    # is then not allowed, and Voila takes the allowed kernel of the notebook's language.
    shutil.copytree(kernel_specs.kernel_dirs[0], tmp_path / "jupyter" / "kernels")
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(tmp_path / "jupyter"),
                                                        _widgets_extension_root()]))
    port = _free_port()
    log_path = tmp_path / "voila.log"
    command = [
        sys.executable, "-m", "voila", str(case.path), "--no-browser", f"--port={port}",
        "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--show_tracebacks=True",
        f"--KernelSpecManager.allowed_kernelspecs={KERNEL}",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while b"running at" not in log_path.read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"voila did not start (exit status {server.poll()}):\n"
                            + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/", log_path
    finally:
        server.terminate()  # Voila shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium that can reach 127.0.0.1 only, in a VIEWPORT-sized page."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path below: no Selenium Manager
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                     "--no-first-run", "--disable-background-networking",
                     f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        # The viewport itself, not the window, at one device pixel per CSS pixel.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        yield driver
    finally:
        driver.save_screenshot(str(tmp_path / "page.png"))  # what the page showed last
        driver.quit()


def _requests(driver):
    """http(s) and WebSocket URLs the browser asked for (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            urls.append(message["params"].get("request", message["params"])["url"])
    return [u for u in urls if urllib.parse.urlsplit(u).scheme in ("http", "https", "ws", "wss")]


def _console(driver):
    """The page's console errors, for failure messages."""
    return "\n".join(e["message"][:500] for e in driver.get_log("browser")
                     if e["level"] == "SEVERE")


def _slider(driver, name):
    """The FloatSlider whose description is ``name``."""
    for slider in driver.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        labels = slider.find_elements(By.CSS_SELECTOR, ".widget-label")
        if labels and labels[0].text.strip() == name:
            return slider
    raise AssertionError(f"no slider named {name!r} on the page")


def _rect(driver, element):
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, top: r.top, right: r.right, bottom: r.bottom,"
        "        width: r.width, height: r.height};", element)


def _number(readout):
    """A slider's readout as a float (ipywidgets writes the minus sign as U+2212)."""
    return float(readout.replace("\N{MINUS SIGN}", "-"))


def _picture(element):
    """What the <img> element shows, as greyscale in [0, 1]."""
    shot = Image.open(io.BytesIO(base64.b64decode(element.screenshot_as_base64)))
    return np.asarray(shot.convert("L"), dtype=float) / 255


WATCH_IMAGE = """
const img = arguments[0], handle = arguments[1];
window.__redraw = {key: null, src: null, load: null, old: img.src};
handle.addEventListener('keydown', () => { window.__redraw.key = performance.now(); },
                        {capture: true, once: true});
new MutationObserver((changes, observer) => {
  if (img.src === window.__redraw.old) return;
  window.__redraw.src = performance.now();
  observer.disconnect();
  img.addEventListener('load', () => { window.__redraw.load = performance.now(); }, {once: true});
  if (img.complete && img.naturalWidth) window.__redraw.load = performance.now();
}).observe(img, {attributes: true, attributeFilter: ['src']});
"""


def _press(driver, handle, img, key):
    """Presses ``key`` on the slider handle; returns ms from the key to the new picture drawn."""
    driver.execute_script(WATCH_IMAGE, img, handle)
    handle.send_keys(key)
    try:
        WebDriverWait(driver, REDRAW_TIMEOUT).until(
            lambda d: d.execute_script("return window.__redraw.load !== null"))
    except TimeoutException:
        raise AssertionError(f"the picture was not redrawn within {REDRAW_TIMEOUT} s "
                             f"after pressing the key") from None
    times = driver.execute_script("return window.__redraw")
    return times["load"] - times["key"]


@pytest.mark.slow
def test_humour_slider_sweeps_the_face_at_its_own_size(case, voila, browser):
    url, log_path = voila
    low_end, high_end = case.humour
    started = time.monotonic()
    try:
        browser.get(url)  # returns when Voila has run the whole notebook, training included
        WebDriverWait(browser, WIDGET_TIMEOUT).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".widget-image img, img.widget-image"))
    except TimeoutException:
        body = browser.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the sliders did not appear; the page ends:\n{body[-2000:]}\nconsole "
                    f"errors:\n{_console(browser)}\nVoila's log ends:\n"
                    + log_path.read_text(errors="replace")[-3000:])
    page_seconds = time.monotonic() - started
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in text and "Error" not in text, text[-3000:]
    assert ("FAST mode" in text) == case.fast, "the notebook ran in the wrong mode"
    if case.trained:
        assert case.trained in text, "the notebook did not train at full settings"

    humour = _slider(browser, "humour")
    pose = _slider(browser, "pose")
    img = browser.find_element(By.CSS_SELECTOR, ".widget-image img, img.widget-image")
    handle = humour.find_element(By.CSS_SELECTOR, ".noUi-handle")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    WebDriverWait(browser, REDRAW_TIMEOUT).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                   img))

    # Shown at its own size: the PNG's pixels one to one, not stretched to the output's width.
    natural = tuple(browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img))
    box = _rect(browser, img)
    assert natural == FACE
    assert (box["width"], box["height"]) == FACE, f"the face is drawn at {box}, not {FACE}"

    # Sliders and face on one screen together.
    width, height = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    assert (width, height) == VIEWPORT
    for name, element in (("humour slider", humour), ("pose slider", pose), ("face", img)):
        r = _rect(browser, element)
        assert 0 <= r["left"] and r["right"] <= width and 0 <= r["top"] and r["bottom"] <= height, \
            f"the {name} is outside the {width} x {height} viewport: {r}"

    # From one end to the other.
    readout = humour.find_element(By.CSS_SELECTOR, ".widget-readout")
    low_ms = _press(browser, handle, img, Keys.HOME)
    assert _number(readout.text) == low_end
    low = _picture(img)
    high_ms = _press(browser, handle, img, Keys.END)
    assert _number(readout.text) == high_end
    high = _picture(img)
    assert low.shape == high.shape == FACE[::-1]
    change = np.abs(high - low).mean()
    print(f"\n{case.stem}: page with the trained notebook after {page_seconds:.0f} s; face "
          f"drawn at {box['width']:.0f} x {box['height']:.0f} px (PNG {natural[0]} x {natural[1]}); "
          f"humour {low_end} -> {high_end} changes the shown face by {change * 255:.1f}/255; "
          f"redraw after a key: {low_ms:.0f} ms, {high_ms:.0f} ms")
    assert change >= case.min_change, \
        f"humour {low_end} -> {high_end} changes the face by {change * 255:.2f}/255"

    if case.printed:  # the notebook printed the same change, computed in the kernel
        printed = re.search(r"humour from -15 to 15 \(pose 0\) changes the face by ([0-9.]+)/255",
                            text)
        assert printed, "the notebook's printed change is missing"
        assert abs(change * 255 - float(printed.group(1))) < 1.0  # PNG rounding, no more

    # Offline: the widgets rendered and redrew with every script from Voila on 127.0.0.1.
    host = urllib.parse.urlsplit(url).netloc
    elsewhere = [u for u in _requests(browser) if urllib.parse.urlsplit(u).netloc != host]
    assert all(u.startswith(ICON_STYLESHEETS) for u in elsewhere), \
        f"the page asked for files elsewhere: {elsewhere}"
