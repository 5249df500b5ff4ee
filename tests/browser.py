"""Test helper: open a local HTML report in headless Chromium, offline, and say what a reader would see.

``check_page`` (or ``Browser().check`` to reuse one browser for several pages) loads a ``file://`` page in
Debian's Chromium through Debian's chromedriver, with the network cut off, takes a full-page PNG screenshot,
collects the browser console's errors, and measures the elements named by CSS selectors. ``PageReport.problems()``
lists what is wrong in words. The report pages must work offline, so a page that pulls a script from a CDN shows
up as a console error here.

Nothing is downloaded: the driver and browser paths are given to Selenium, so Selenium Manager is never run
(and ``SE_OFFLINE`` is set in case it were). The browser profile, ``HOME`` and XDG dirs of the browser live in a
temporary folder under ``$TMPDIR`` (the project cache), removed on close: nothing is written to ``~``.
The system packages come from ``scripts/install-system-deps`` (``make test`` runs it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4academic.base import KitError, atomic_write, cache_dir

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's `chromium-driver` package (same version as chromium)
INSTALL_HINT = "run scripts/install-system-deps (or `make test`, which runs it)"

WIDTH = 1280
INITIAL_HEIGHT = 800
MAX_HEIGHT = 16384  # screenshots taller than this are cut (Chromium's surface limit is about there)
TIMEOUT_S = 30.0

CHROME_FLAGS: tuple[str, ...] = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-breakpad",
    # No network: everything that is not a file:// URL goes to a dead proxy (port 9, discard) and host names
    # never resolve; on top, the page itself is put offline through the DevTools protocol (see _offline).
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)

# Runs before any script of each page: dialogs would block the page, so they are recorded instead.
_DIALOG_STUB = """
(() => {
  const seen = [];
  Object.defineProperty(window, '__llm4aDialogs', {value: seen});
  for (const name of ['alert', 'confirm', 'prompt', 'print']) {
    window[name] = function (message) {
      seen.push(name + '(' + (message === undefined ? '' : String(message)) + ')');
      return name === 'confirm' ? false : null;
    };
  }
})();
"""

# Waits for fonts and the images still loading, then two animation frames (layout and paint done).
_SETTLE = """
const done = arguments[arguments.length - 1];
const waits = [document.fonts ? document.fonts.ready : Promise.resolve()];
for (const img of Array.from(document.images)) {
  if (!img.complete) {
    waits.push(new Promise(r => { img.addEventListener('load', r, {once: true});
                                  img.addEventListener('error', r, {once: true}); }));
  }
}
Promise.all(waits).then(() => requestAnimationFrame(() => requestAnimationFrame(() => done(true))),
                        () => done(false));
"""

_PAGE_HEIGHT = """
const d = document.documentElement, b = document.body;
return Math.ceil(Math.max(d ? d.scrollHeight : 0, b ? b.scrollHeight : 0, d ? d.getBoundingClientRect().height : 0));
"""

# For each selector: how many elements match and, for the first 50, their box and whether a reader sees them.
_MEASURE = """
const selectors = arguments[0], out = {};
for (const [name, selector] of Object.entries(selectors)) {
  let els;
  try { els = Array.from(document.querySelectorAll(selector)); }
  catch (e) { out[name] = {error: String(e), count: 0, items: []}; continue; }
  out[name] = {count: els.length, items: els.slice(0, 50).map(el => {
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    let visible = r.width > 0 && r.height > 0 && cs.display !== 'none'
                  && cs.visibility !== 'hidden' && cs.visibility !== 'collapse';
    if (visible && el.checkVisibility) {  // hidden ancestors, opacity 0, content-visibility
      visible = el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
    }
    let broken = false;
    if (el instanceof HTMLImageElement) {  // a broken image still has a box (its alt text / icon)
      broken = !(el.complete && el.naturalWidth > 0);
      if (broken) visible = false;
    }
    return {width: r.width, height: r.height, visible: visible, broken: broken};
  })};
}
return out;
"""


@dataclass
class ElementReport:
    """The elements one CSS selector matched: count, their sizes (CSS px, first 50) and whether one is visible."""

    selector: str
    count: int
    visible: bool
    sizes: list[tuple[float, float]] = field(default_factory=list)
    broken_images: int = 0


@dataclass
class PageReport:
    url: str
    title: str
    screenshot: Path
    screenshot_size: tuple[int, int]  # (width, height) in px
    page_height: int  # full layout height in CSS px; the screenshot is cut at MAX_HEIGHT
    console_errors: list[str]  # browser console entries at level SEVERE
    console: list[tuple[str, str]]  # every console entry: (level, message)
    dialogs: list[str]  # alert()/confirm()/prompt()/print() calls the page made
    elements: dict[str, ElementReport]
    inner_text: str  # document.body.innerText

    def problems(self) -> list[str]:
        """What a reader would find wrong, in words; empty when the page is fine."""
        out = [f"console error: {msg}" for msg in self.console_errors]
        out += [f"the page opened a dialog: {d}" for d in self.dialogs]
        for name, el in self.elements.items():
            if el.count == 0:
                out.append(f"{name}: no element matches {el.selector!r}")
            elif not el.visible:
                sizes = ", ".join(f"{w:g}x{h:g}" for w, h in el.sizes[:5])
                broken = f"; {el.broken_images} broken image(s)" if el.broken_images else ""
                out.append(
                    f"{name}: {el.count} element(s) match {el.selector!r} but none is visible (sizes {sizes}{broken})"
                )
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()


def chromium_available() -> str | None:
    """None when the browser check can run; otherwise why not, with what to do."""
    missing = [
        f"{p} (Debian package {pkg})"
        for p, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver"))
        if not (p.is_file() and os.access(p, os.X_OK))
    ]
    if missing:
        return f"not installed: {', '.join(missing)}; {INSTALL_HINT}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the Python package selenium is not installed in this environment; run `make test` (it installs .[dev])"
    return None


def _tmp_base() -> Path:
    base = Path(os.environ.get("TMPDIR") or cache_dir() / "tmp")
    base.mkdir(parents=True, exist_ok=True)
    return base


def _png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise KitError("Chromium returned a screenshot that is not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class Browser:
    """One headless Chromium, offline, reused for several pages: ``with Browser() as b: b.check(...)``."""

    def __init__(self, width: int = WIDTH, timeout_s: float = TIMEOUT_S):
        self.width = width
        self.timeout_s = timeout_s
        self.driver: Any = None
        self._dir: Path | None = None

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.driver is not None:
            return
        why = chromium_available()
        if why:
            raise KitError(f"the browser check needs Chromium and chromedriver: {why}")
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager is skipped anyway: both paths are given
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        self._dir = Path(tempfile.mkdtemp(prefix="llm4a-chromium-", dir=_tmp_base()))
        home = self._dir / "home"
        env = dict(
            os.environ,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_DATA_HOME=str(home / ".local" / "share"),
            TMPDIR=str(self._dir),
        )
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        for sub in (".config", ".cache", ".local/share"):
            (home / sub).mkdir(parents=True, exist_ok=True)

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._dir / 'profile'}")
        options.add_argument(f"--disk-cache-dir={self._dir / 'cache'}")
        options.add_argument(f"--window-size={self.width},{INITIAL_HEIGHT}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        options.unhandled_prompt_behavior = "dismiss"  # backstop; the dialog stub records them first
        self.log_path = self._dir / "chromedriver.log"
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(self.log_path), env=env)
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException as e:
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.is_file() else ""
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            first = (e.msg or str(e)).strip().splitlines()[0] if (e.msg or str(e)).strip() else type(e).__name__
            raise KitError(
                f"headless Chromium did not start ({CHROMIUM} via {CHROMEDRIVER}): {first}\n"
                f"chromedriver log (end):\n{tail}\nIf the packages are broken or mismatched, "
                f"{INSTALL_HINT}"
            ) from e
        self.driver.set_page_load_timeout(self.timeout_s)
        self.driver.set_script_timeout(self.timeout_s)
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _DIALOG_STUB})

    def close(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # ------------------------------------------------------------------ checks

    def _offline(self) -> None:
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

    def _viewport(self, height: int) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _settle(self) -> None:
        from selenium.common.exceptions import TimeoutException

        try:
            self.driver.execute_async_script(_SETTLE)
        except TimeoutException:
            pass  # still-loading images are then reported as broken by _MEASURE

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression on the page last checked."""
        self._need_driver()
        return self.driver.execute_script(f"return ({expression});")

    def _need_driver(self) -> None:
        if self.driver is None:
            raise KitError("the browser is not started: use `with Browser() as b:` or call start()")

    def check(
        self, html_path: str | os.PathLike, screenshot_path: str | os.PathLike, selectors: dict[str, str] | None = None
    ) -> PageReport:
        """Load ``html_path`` offline, screenshot the whole page to ``screenshot_path`` and measure ``selectors``."""
        self._need_driver()
        path = Path(html_path).resolve()
        if not path.is_file():
            raise KitError(f"no such page: {path}")
        selectors = dict(selectors or {})
        driver = self.driver
        driver.get_log("browser")  # drop what earlier pages logged
        self._offline()
        self._viewport(INITIAL_HEIGHT)
        url = path.as_uri()
        driver.get(url)  # returns after the load event
        self._settle()
        page_height = int(driver.execute_script(_PAGE_HEIGHT) or 1)
        self._viewport(max(1, min(page_height, MAX_HEIGHT)))  # the whole page in view: lazy content loads
        self._settle()
        measured = driver.execute_script(_MEASURE, selectors)
        png = driver.get_screenshot_as_png()
        atomic_write(screenshot_path, png)
        title = driver.title
        inner_text = driver.execute_script("return document.body ? document.body.innerText : '';") or ""
        dialogs = list(driver.execute_script("return window.__llm4aDialogs || [];") or [])
        console = [(e.get("level", ""), e.get("message", "")) for e in driver.get_log("browser")]

        elements = {}
        for name, selector in selectors.items():
            m = measured[name]
            if m.get("error"):
                raise ValueError(f"{name}: invalid CSS selector {selector!r}: {m['error']}")
            items = m["items"]
            elements[name] = ElementReport(
                selector=selector,
                count=int(m["count"]),
                visible=any(i["visible"] for i in items),
                sizes=[(round(i["width"], 1), round(i["height"], 1)) for i in items],
                broken_images=sum(1 for i in items if i["broken"]),
            )
        return PageReport(
            url=url,
            title=title,
            screenshot=Path(screenshot_path),
            screenshot_size=_png_size(png),
            page_height=page_height,
            console_errors=[m for lvl, m in console if lvl == "SEVERE"],
            console=console,
            dialogs=dialogs,
            elements=elements,
            inner_text=inner_text,
        )


def check_page(
    html_path: str | os.PathLike, screenshot_path: str | os.PathLike, selectors: dict[str, str] | None = None
) -> PageReport:
    """Start a browser, check one page (see ``Browser.check``) and close the browser."""
    with Browser() as browser:
        return browser.check(html_path, screenshot_path, selectors)
