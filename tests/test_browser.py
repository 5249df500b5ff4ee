"""The browser check (tests/browser.py) on small synthetic pages, in headless Chromium, offline.

The tests marked ``browser`` need Chromium: `make test` installs it (scripts/install-system-deps). Where it is
missing and cannot be installed (not root, no password-less sudo) they skip, saying why and the install command;
under ``CI=true`` they fail instead (tests/conftest.py's ``browser_gate``, tested at the end of this file).
"""

import base64
import struct
import zlib

import browser as browser_mod
import pytest
from browser import Browser, check_page, chromium_available
from conftest import write

from llm4academic.config import KitError

SELECTORS = {"leaderboard": "table#leaderboard", "figures": "img"}


def png_bytes(width: int, height: int, rgb=(200, 30, 30)) -> bytes:
    """A solid-colour PNG, made here so that the page needs no file but itself."""
    row = b"\x00" + bytes(rgb) * width

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


IMG = f'<img alt="loss curve" src="data:image/png;base64,{base64.b64encode(png_bytes(40, 30)).decode()}">'
TABLE = (
    '<table id="leaderboard" {style}><tr><th>model</th><th>score</th></tr>'
    "<tr><td>tiny-llama</td><td>0.5</td></tr></table>"
)


def page(body: str, head: str = "", title: str = "study report") -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{head}</head>'
        f"<body>{body}</body></html>"
    )


@pytest.fixture(scope="module")
def browser():
    assert chromium_available() is None  # conftest's browser_gate has skipped or failed the test otherwise
    with Browser() as b:
        yield b


@pytest.mark.browser
def test_good_page_passes_with_a_full_width_screenshot(browser, tmp_path):
    html = write(
        tmp_path / "index.html",
        page("<h1>Leaderboard</h1>" + TABLE.format(style="") + IMG + '<div style="height:1500px">tall</div>'),
    )
    shot = tmp_path / "shots" / "index.png"
    report = browser.check(html, shot, SELECTORS)
    assert report.problems() == [], report.problems()
    assert report.ok and report.title == "study report" and report.url == html.resolve().as_uri()
    assert report.console_errors == []
    lb, fig = report.elements["leaderboard"], report.elements["figures"]
    assert lb.count == 1 and lb.visible and lb.sizes[0][0] > 0 and lb.sizes[0][1] > 0
    assert fig.count == 1 and fig.visible and fig.sizes == [(40.0, 30.0)] and fig.broken_images == 0
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == report.screenshot_size
    assert width == 1280 and height >= 1500 and height == report.page_height  # the whole page, not the viewport
    assert "tiny-llama" in report.inner_text


@pytest.mark.browser
def test_console_error_and_uncaught_exception_are_reported(browser, tmp_path):
    html = write(
        tmp_path / "bad.html",
        page(TABLE.format(style="") + IMG + "<script>console.error('bad thing');throw new Error('kaboom');</script>"),
    )
    report = browser.check(html, tmp_path / "bad.png", SELECTORS)
    errors = "\n".join(report.console_errors)
    assert "bad thing" in errors and "Uncaught Error: kaboom" in errors, report.console
    assert any(p.startswith("console error:") for p in report.problems())
    # visibility is unaffected: only the console is at fault
    assert report.elements["leaderboard"].visible and report.elements["figures"].visible


@pytest.mark.browser
def test_errors_of_an_earlier_page_do_not_leak_into_the_next(browser, tmp_path):
    write(tmp_path / "a.html", page("<script>console.error('from a')</script>"))
    browser.check(tmp_path / "a.html", tmp_path / "a.png")
    report = browser.check(write(tmp_path / "b.html", page("<p>fine</p>")), tmp_path / "b.png")
    assert report.console_errors == [] and report.problems() == []


@pytest.mark.browser
def test_hidden_table_and_broken_image_are_not_visible(browser, tmp_path):
    html = write(
        tmp_path / "hidden.html",
        page(TABLE.format(style='style="display:none"') + '<img alt="figure" src="missing.png">'),
    )
    report = browser.check(html, tmp_path / "hidden.png", SELECTORS)
    lb, fig = report.elements["leaderboard"], report.elements["figures"]
    assert lb.count == 1 and not lb.visible and lb.sizes == [(0.0, 0.0)]
    assert fig.count == 1 and not fig.visible and fig.broken_images == 1
    problems = "\n".join(report.problems())
    assert "leaderboard: 1 element(s) match" in problems and "none is visible" in problems
    assert "figures:" in problems and "broken image" in problems
    assert "ERR_FILE_NOT_FOUND" in problems  # the missing file is also a console error


@pytest.mark.browser
def test_hidden_by_ancestor_or_visibility_and_missing_elements(browser, tmp_path):
    html = write(
        tmp_path / "more.html",
        page(
            '<div style="display:none">'
            + TABLE.format(style="")
            + "</div>"
            + IMG.replace("<img", '<img style="visibility:hidden"')
        ),
    )
    report = browser.check(html, tmp_path / "more.png", {**SELECTORS, "nothing": "#no-such-thing"})
    assert not report.elements["leaderboard"].visible and not report.elements["figures"].visible
    assert "nothing: no element matches '#no-such-thing'" in report.problems()


@pytest.mark.browser
def test_cdn_script_fails_offline(browser, tmp_path):
    """The pages must work offline: a script from a CDN cannot load, and that is a console error."""
    html = write(
        tmp_path / "cdn.html",
        page(TABLE.format(style="") + IMG, head='<script src="https://cdn.example.invalid/x.js"></script>'),
    )
    report = browser.check(html, tmp_path / "cdn.png", SELECTORS)
    assert any("cdn.example.invalid/x.js" in e for e in report.console_errors), report.console
    assert any("ERR_INTERNET_DISCONNECTED" in e for e in report.console_errors), report.console


@pytest.mark.browser
def test_real_host_is_not_reached(browser, tmp_path):
    """Even an image from a well-known host (which would resolve online) does not load."""
    html = write(tmp_path / "net.html", page('<img src="https://www.google.com/favicon.ico">'))
    report = browser.check(html, tmp_path / "net.png", {"figures": "img"})
    assert not report.elements["figures"].visible and report.console_errors, report.console


@pytest.mark.browser
def test_escaped_script_is_text_and_does_not_run(browser, tmp_path):
    payload = "<script>window.__pwned = 1; alert(1)</script>"
    escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    html = write(tmp_path / "xss.html", page(f'<p id="note">{escaped}</p>' + TABLE.format(style="")))
    report = browser.check(html, tmp_path / "xss.png", {"note": "#note"})
    assert payload in report.inner_text and report.elements["note"].visible
    assert browser.evaluate("typeof window.__pwned") == "undefined"
    assert report.dialogs == [] and report.problems() == []


@pytest.mark.browser
def test_a_dialog_is_recorded_not_blocking(browser, tmp_path):
    """The same payload unescaped does run: the check sees it (and the dialog does not hang the browser)."""
    html = write(tmp_path / "ran.html", page("<p><script>window.__pwned = 1; alert(1)</script></p>"))
    report = browser.check(html, tmp_path / "ran.png")
    assert browser.evaluate("window.__pwned") == 1
    assert report.dialogs == ["alert(1)"] and "the page opened a dialog: alert(1)" in report.problems()


@pytest.mark.browser
def test_invalid_selector_and_missing_page(browser, tmp_path):
    html = write(tmp_path / "x.html", page("<p>x</p>"))
    with pytest.raises(ValueError, match="invalid CSS selector"):
        browser.check(html, tmp_path / "x.png", {"bad": "table[["})
    with pytest.raises(KitError, match="no such page"):
        browser.check(tmp_path / "nope.html", tmp_path / "nope.png")


@pytest.mark.browser
def test_check_page_starts_and_closes_its_own_browser(tmp_path):
    html = write(tmp_path / "one.html", page(TABLE.format(style="")))
    report = check_page(html, tmp_path / "one.png", {"leaderboard": "#leaderboard"})
    assert report.ok and (tmp_path / "one.png").stat().st_size > 0


def test_missing_chromium_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(browser_mod, "CHROMIUM", tmp_path / "no-chromium")
    why = chromium_available()
    assert why and "no-chromium" in why and "scripts/install-system-deps" in why
    with pytest.raises(KitError, match="install-system-deps"):
        check_page(write(tmp_path / "p.html", page("x")), tmp_path / "p.png")


@pytest.fixture
def no_chromium_not_root(monkeypatch, tmp_path):
    """A fake machine: no Chromium, a Debian system, not root, no sudo, CI unset."""
    import conftest

    monkeypatch.setattr(browser_mod, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(browser_mod, "CHROMEDRIVER", tmp_path / "no-chromedriver")
    monkeypatch.setattr(conftest.os, "geteuid", lambda: 1000)
    real_which = conftest.shutil.which
    monkeypatch.setattr(
        conftest.shutil,
        "which",
        lambda cmd, *a, **kw: (
            None if cmd == "sudo" else ("/usr/bin/apt-get" if cmd == "apt-get" else real_which(cmd, *a, **kw))
        ),
    )
    monkeypatch.delenv("CI", raising=False)
    return conftest


def test_without_chromium_or_root_the_browser_tests_skip_with_the_install_command(no_chromium_not_root):
    conftest = no_chromium_not_root
    kind, reason = conftest.browser_gate()
    assert kind == "skip", reason
    assert "not root" in reason and "no-chromium" in reason
    assert "apt-get install -y --no-install-recommends chromium chromium-driver" in reason
    assert conftest.SYSDEPS_INSTALL in reason and "CI=true" in reason


def test_under_ci_a_missing_chromium_fails_the_browser_tests(no_chromium_not_root, monkeypatch):
    monkeypatch.setenv("CI", "true")
    kind, reason = no_chromium_not_root.browser_gate()
    assert kind == "fail" and "CI=true" in reason and "no-chromium" in reason


def test_where_it_could_be_installed_a_missing_chromium_fails(no_chromium_not_root, monkeypatch):
    """Root (or password-less sudo) on Debian: `make test` installs Chromium, so a missing one is a failure."""
    monkeypatch.setattr(no_chromium_not_root.os, "geteuid", lambda: 0)
    kind, reason = no_chromium_not_root.browser_gate()
    assert kind == "fail" and "install-system-deps" in reason


def test_with_chromium_the_gate_lets_the_browser_tests_run():
    import conftest

    assert (conftest.browser_gate() is None) == (chromium_available() is None)


def test_the_gate_runs_before_every_browser_test():
    """The hook applies browser_gate's verdict: pytest.skip or pytest.fail before the test's fixtures."""
    import conftest

    class Item:
        def __init__(self, marked):
            self.marked = marked

        def get_closest_marker(self, name):
            return object() if (self.marked and name == "browser") else None

    conftest.pytest_runtest_setup(Item(False))  # unmarked tests are never gated
    saved = conftest._browser_gate_once
    try:
        conftest._browser_gate_once = lambda: ("skip", "why and how")
        with pytest.raises(pytest.skip.Exception, match="why and how"):
            conftest.pytest_runtest_setup(Item(True))
        conftest._browser_gate_once = lambda: ("fail", "must run")
        with pytest.raises(pytest.fail.Exception, match="must run"):
            conftest.pytest_runtest_setup(Item(True))
    finally:
        conftest._browser_gate_once = saved
