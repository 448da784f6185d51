"""The bookstore's Meteor-format front end in headless Chromium (Debian's ``chromium``,
installed by scripts/install-chromium), driven over the DevTools protocol."""
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
import websocket
from conftest import eventually
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
        self.events = []  # DevTools events ({"method", "params"}) seen while waiting for replies

    def send(self, method, **params):
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == call_id:
                assert "error" not in reply, reply
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

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

    def ddp_frames(self, direction="Sent"):
        """The DDP messages the page's WebSockets sent (or ``"Received"``) since
        ``Network.enable``, in order, as dicts."""
        return [json.loads(e["params"]["response"]["payloadData"]) for e in self.events
                if e["method"] == f"Network.webSocketFrame{direction}"]

    def wait_for_frames(self, predicate, direction="Sent", timeout=20):
        """Wait until ``predicate(frames)`` holds for :meth:`ddp_frames`; the frames."""
        deadline = time.monotonic() + timeout
        while not predicate(self.ddp_frames(direction)):
            assert time.monotonic() < deadline, f"frames: {self.ddp_frames(direction)[-10:]}"
            self.evaluate("0")  # reading the reply collects the events sent before it
            time.sleep(0.1)
        return self.ddp_frames(direction)

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


# -- logging in (ddpctl.accounts) ---------------------------------------------------------

SHOWN_USER = ("document.getElementById('user').hidden ? '' : "
              "document.getElementById('username').textContent")
MY_BOOKS = "Array.from(document.querySelectorAll('#my-books li')).map(li => li.textContent).join('|')"
STORED = "JSON.stringify(['Meteor.loginToken', 'Meteor.loginTokenExpires', 'Meteor.userId']" \
         ".map(k => localStorage.getItem(k)))"


def make_user(sql, username, password):
    """A user in the live database, hashed with the bookstore's first password hasher."""
    from bookstore import settings as bookstore_settings
    from django.contrib.auth.hashers import make_password
    from django.utils.module_loading import import_string

    hasher = import_string(bookstore_settings.PASSWORD_HASHERS[0])()
    return sql("INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, "
               "is_staff, is_active, date_joined) VALUES (%s, false, %s, '', '', '', false, true, now()) "
               "RETURNING id", [make_password(password, hasher=hasher), username], fetch=True)[0][0]


def log_in(browser, username, password):
    browser.evaluate(f"""(() => {{ const f = document.getElementById('login');
        f.username.value = {json.dumps(username)}; f.password.value = {json.dumps(password)};
        f.querySelector('button').click(); }})()""")


def after_connect(frames):
    """The frames sent on the page's last WebSocket from its ``connect`` on ([] before it)."""
    starts = [i for i, f in enumerate(frames) if f.get("msg") == "connect"]
    return frames[starts[-1]:] if starts else []


def logins(frames):
    return [f for f in frames if f.get("msg") == "method" and f["method"] == "login"]


def test_bookstore_page_logs_in_resumes_after_reload_and_reconnect_and_logs_out(
        start_server, clean, sql, browser, ddpctl):
    sql("TRUNCATE ddpctl_accounts_logintoken, auth_user RESTART IDENTITY CASCADE")
    ada = make_user(sql, "ada", "correct horse")
    bob = make_user(sql, "bob", "battery staple")
    insert_book(sql, "Nobody's Book")
    bobs_book = insert_book(sql, "Bob's Book")
    sql("UPDATE bookstore_book SET owner_id = %s WHERE id = %s", [bob, bobs_book])
    server = start_server()
    browser.send("Network.enable")
    browser.send("Page.navigate", url=server.url + "/")
    browser.wait_for(f"{BOOK_TITLES}.includes(\"Bob's Book\")")
    assert browser.evaluate("document.getElementById('login').hidden") is False
    assert browser.evaluate("document.getElementById('mine').hidden") is True
    assert logins(browser.ddp_frames()) == []  # no token stored: no resume

    # A wrong password: Meteor's (ambiguous) error text, nothing stored.
    log_in(browser, "ada", "wrong")
    assert browser.wait_for("document.getElementById('login-error').textContent") == \
        "Something went wrong. Please check your credentials."
    assert json.loads(browser.evaluate(STORED)) == [None, None, None]

    log_in(browser, "ada", "correct horse")
    assert browser.wait_for(SHOWN_USER + " === 'ada' && " + SHOWN_USER) == "ada"  # from `users`
    assert browser.evaluate("document.getElementById('login-error').textContent") == ""
    token, expires, user_id = json.loads(browser.evaluate(STORED))
    assert len(token) == 43 and user_id == str(ada)
    days = browser.evaluate(f"(new Date({json.dumps(expires)}) - Date.now()) / 86400000")
    assert 89 < days < 90.1  # Meteor stores the Date's text
    # The page sent Meteor's digest, never the password.
    sent = logins(browser.ddp_frames())
    assert [f["params"][0]["password"] for f in sent] == [
        {"digest": hashlib.sha256(p.encode()).hexdigest(), "algorithm": "sha-256"}
        for p in ["wrong", "correct horse"]]
    assert "correct horse" not in json.dumps(browser.ddp_frames())
    assert sql("SELECT user_id FROM ddpctl_accounts_logintoken", fetch=True) == [(ada,)]

    # My books: what ada adds, not bob's book nor the ownerless one.
    assert browser.wait_for("!document.getElementById('mine').hidden")
    assert browser.evaluate(MY_BOOKS) == ""
    browser.evaluate("""(() => { const f = document.getElementById('add');
        f.title.value = 'Ada Writes'; f.email.value = 'ada@example.com';
        f.querySelector('button').click(); })()""")
    assert browser.wait_for(f"{MY_BOOKS} === 'Ada Writes by Ada' && {MY_BOOKS}")
    assert "Bob's Book by A" in browser.evaluate(BOOK_TITLES)
    assert sql("SELECT owner_id FROM bookstore_book WHERE title = 'Ada Writes'", fetch=True) == [(ada,)]

    # A reload: the stored token logs the page in again, first thing on the new connection.
    browser.events.clear()
    browser.send("Page.reload")
    frames = after_connect(browser.wait_for_frames(lambda f: len(after_connect(f)) >= 2))
    assert frames[1] == {"msg": "method", "method": "login", "params": [{"resume": token}], "id": "1"}
    assert browser.wait_for(SHOWN_USER + " === 'ada' && " + SHOWN_USER) == "ada"
    assert browser.wait_for(f"{MY_BOOKS} === 'Ada Writes by Ada' && {MY_BOOKS}")
    assert json.loads(browser.evaluate(STORED))[0] == token
    assert all("password" not in f.get("params", [{}])[0] for f in logins(browser.ddp_frames()))
    assert sql("SELECT count(*) FROM ddpctl_accounts_logintoken", fetch=True) == [(1,)]

    # The server drops the connection: the page reconnects and resumes before anything else.
    session = next(f["session"] for f in browser.ddp_frames("Received") if f.get("msg") == "connected")
    browser.events.clear()
    eventually(lambda: ddpctl("conns", "close", session, check=False).returncode == 0)  # once listed
    frames = after_connect(browser.wait_for_frames(lambda f: len(after_connect(f)) >= 2))
    assert (frames[1]["method"], frames[1]["params"]) == ("login", [{"resume": token}])
    browser.wait_for("document.getElementById('status').textContent.includes('live')")
    assert browser.wait_for(SHOWN_USER + " === 'ada' && " + SHOWN_USER) == "ada"

    # Log out: the user, their books and the stored token go; the server forgets the token.
    browser.evaluate("document.getElementById('logout').click()")
    browser.wait_for("!document.getElementById('login').hidden")
    assert browser.evaluate(SHOWN_USER) == ""
    assert browser.evaluate("document.getElementById('mine').hidden") is True
    assert json.loads(browser.evaluate(STORED)) == [None, None, None]
    assert sql("SELECT count(*) FROM ddpctl_accounts_logintoken", fetch=True) == [(0,)]
    browser.wait_for(f"{MY_BOOKS} === ''")

    # Another user sees only their own books.
    log_in(browser, "bob", "battery staple")
    assert browser.wait_for(SHOWN_USER + " === 'bob' && " + SHOWN_USER) == "bob"
    assert browser.wait_for(f"{MY_BOOKS} === \"Bob's Book by A\" && {MY_BOOKS}")
    assert browser.evaluate("document.getElementById('login-error').textContent") == ""
