"""The bookstore's Meteor-format front end in headless Chromium (Debian's ``chromium``,
installed by scripts/install-chromium), driven over the DevTools protocol."""
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
import websocket
from test_live_data import insert_book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(os.environ.get("DDPCTL_SKIP_BROWSER") == "1" and not CHROMIUM,
                                reason="DDPCTL_SKIP_BROWSER=1 and no chromium")


class Browser:
    """One headless Chromium page, spoken to with the Chrome DevTools Protocol."""

    def __init__(self, profile):
        assert CHROMIUM, "chromium is not installed (scripts/install-chromium installs it)"
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)

    def send(self, method, **params):
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == call_id:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, expression):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"{expression!r} stayed {value!r}"
            time.sleep(0.1)

    def close(self):
        self.ws.close()
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def browser(tmp_path):
    chromium = Browser(tmp_path / "profile")
    yield chromium
    chromium.close()


BOOK_TITLES = "Array.from(document.querySelectorAll('#books li')).map(li => li.textContent).join('|')"


def test_bookstore_page_shows_a_book_inserted_with_sql_without_a_reload(start_server, clean, sql, browser):
    server = start_server()  # the bookstore settings serve frontend/bundle
    insert_book(sql, "Already There")
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for("document.getElementById('status') && "
                     "document.getElementById('status').textContent.includes('live')")
    assert "Already There by A" in browser.wait_for(BOOK_TITLES)
    assert browser.evaluate("__meteor_runtime_config__.isModern") is True
    browser.evaluate("window.__notReloaded = 42")

    insert_book(sql, "Inserted With SQL")  # another client of PostgreSQL, not the page
    assert "Inserted With SQL by A" in browser.wait_for(f"{BOOK_TITLES}.includes('Inserted With SQL') && "
                                                        f"{BOOK_TITLES}")
    assert browser.evaluate("window.__notReloaded") == 42

    # The page adds a book through the books.add method.
    browser.evaluate("""(() => { const f = document.getElementById('add');
        f.title.value = 'Added In The Browser'; f.email.value = 'web@example.com'; f.pages.value = '12';
        f.querySelector('button').click(); })()""")
    browser.wait_for(f"{BOOK_TITLES}.includes('Added In The Browser')")
    assert sql("SELECT pages FROM bookstore_book WHERE title = 'Added In The Browser'", fetch=True) == [(12,)]
    assert browser.evaluate("window.__notReloaded") == 42
