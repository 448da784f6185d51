// The bookstore's front end: a minimal DDP client in plain JavaScript, shipped as a bundle in
// `meteor build`'s format.  It reads __meteor_runtime_config__ like a Meteor client, lists
// the books of the AllBooks publication live, adds books through the books.add method, and
// follows hot code push (meteor_autoupdate_clientVersions): a new version reloads the page,
// a CSS-only change swaps the stylesheet.
//
// Accounts, the way Meteor's accounts-base / accounts-password clients do them:
// - log in with `login {user: {username} | {email}, password: {digest, algorithm: "sha-256"}}`,
//   the digest being SHA-256 of the UTF-8 password in hex (Accounts._hashPassword; computed
//   with crypto.subtle, so the page must be a secure context: https, localhost or 127.0.0.1);
// - keep the token in localStorage under Meteor's keys (Meteor.loginToken,
//   Meteor.loginTokenExpires -- a Date's text -- and Meteor.userId), and on every (re)connect
//   send `login {resume: token}` first, as a "wait" method: later method calls wait for its
//   result, like Meteor's onReconnect login.  A failed resume logs the page out (and forgets
//   the token), a token expiring within the hour is not used;
// - Meteor.user() is the connection's own document in the `users` collection;
// - logout calls `logout` and, once it succeeded, forgets the token;
// - another tab logging in or out (the `storage` event) is followed, like Meteor's polling of
//   the stored token.
// The logged-in user's books come from the MyBooks publication (collection `my_books`).
(function () {
  "use strict";
  var config = window.__meteor_runtime_config__ || {};
  var arch = config.isModern ? "web.browser" : "web.browser.legacy";
  var bootVersions = ((config.autoupdate || {}).versions || {})[arch] || {};
  var TOKEN_KEY = "Meteor.loginToken", EXPIRES_KEY = "Meteor.loginTokenExpires", USER_ID_KEY = "Meteor.userId";
  var MIN_TOKEN_LIFETIME_MS = 3600 * 1000;  // Meteor's cap on "expires soon"
  var collections = {};  // name -> id -> fields
  var socket = null, connected = false, nextId = 1, retry = 0;
  var pending = {};      // method id -> {msg, wait, resume, resolve, reject}: sent or queued, no result yet
  var outbox = [];       // method messages waiting to be sent (behind a "wait" method or a connection)
  var waitingFor = null; // id of the "wait" method in flight: later methods are held until its result
  var userId = null, loggingIn = false;

  function docs(name) { return collections[name] || (collections[name] = {}); }

  function ddpUrl() {
    var base = config.DDP_DEFAULT_CONNECTION_URL || config.ROOT_URL || (location.origin + "/");
    return base.replace(/^http/, "ws").replace(/\/?$/, "/websocket");
  }

  function send(msg) { if (socket && socket.readyState === 1) socket.send(JSON.stringify(msg)); }

  // -- methods ---------------------------------------------------------------------------

  function flush() {
    while (connected && waitingFor === null && outbox.length) {
      var entry = outbox.shift();
      send(entry.msg);
      if (entry.wait) waitingFor = entry.msg.id;
    }
  }

  // Call a method; a Promise of its result.  `options.wait`: later calls wait for this one's
  // result (Meteor's {wait: true}).  Calls made while disconnected go out after the reconnect.
  function call(method, params, options) {
    options = options || {};
    return new Promise(function (resolve, reject) {
      var id = String(nextId++);
      var entry = { msg: { msg: "method", method: method, params: params, id: id },
                    wait: !!options.wait, resume: !!options.resume, resolve: resolve, reject: reject };
      pending[id] = entry;
      if (options.first) outbox.unshift(entry); else outbox.push(entry);
      flush();
    });
  }

  function onResult(msg) {
    var entry = pending[msg.id];
    delete pending[msg.id];
    if (waitingFor === msg.id) waitingFor = null;
    if (entry) msg.error ? entry.reject(msg.error) : entry.resolve(msg.result);
    flush();
  }

  // -- accounts ----------------------------------------------------------------------------

  function storedToken() {
    var token = localStorage.getItem(TOKEN_KEY);
    var expires = localStorage.getItem(EXPIRES_KEY);
    if (token && expires && new Date() > new Date(new Date(expires).getTime() - MIN_TOKEN_LIFETIME_MS)) {
      forgetToken();  // expired or about to: Meteor's _unstoreLoginTokenIfExpiresSoon
      return null;
    }
    return token;
  }

  function storeToken(result) {
    var expires = result.tokenExpires && result.tokenExpires.$date !== undefined
      ? new Date(result.tokenExpires.$date) : new Date(Date.now() + 90 * 24 * 3600 * 1000);
    localStorage.setItem(USER_ID_KEY, result.id);
    localStorage.setItem(TOKEN_KEY, result.token);
    localStorage.setItem(EXPIRES_KEY, expires.toString());  // what Meteor stores: the Date's text
  }

  function forgetToken() {
    [USER_ID_KEY, TOKEN_KEY, EXPIRES_KEY].forEach(function (key) { localStorage.removeItem(key); });
  }

  function loggedOut() {  // Meteor's makeClientLoggedOut
    forgetToken();
    userId = null;
    loggingIn = false;
    render();
  }

  // Meteor's callLoginMethod: a "wait" login call; on success the connection's user and the
  // stored token.
  function login(options, callOptions) {
    loggingIn = true;
    render();
    callOptions = callOptions || {};
    return call("login", [options], { wait: true, first: callOptions.first, resume: !!options.resume })
      .then(function (result) {
        storeToken(result);
        userId = result.id;
        loggingIn = false;
        render();
        return result;
      }, function (error) {
        if (options.resume) loggedOut(); else { loggingIn = false; render(); }
        throw error;
      });
  }

  function resume(token, first) {
    userId = localStorage.getItem(USER_ID_KEY);  // Meteor.userId() is known while logging in
    return login({ resume: token }, { first: first }).catch(function (error) {
      showLoginError(error);
    });
  }

  function hashPassword(password) {  // Accounts._hashPassword
    if (!(window.crypto && crypto.subtle)) {
      return Promise.reject({ reason: "Logging in needs a secure page (https, localhost or 127.0.0.1)" });
    }
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(password)).then(function (buffer) {
      var digest = Array.prototype.map.call(new Uint8Array(buffer), function (byte) {
        return ("0" + byte.toString(16)).slice(-2);
      }).join("");
      return { digest: digest, algorithm: "sha-256" };
    });
  }

  function loginWithPassword(selector, password) {  // Meteor.loginWithPassword
    var user = selector.indexOf("@") === -1 ? { username: selector } : { email: selector };
    return hashPassword(password).then(function (hashed) {
      return login({ user: user, password: hashed });
    });
  }

  function logout() {  // Meteor.logout: forget the token once the server logged us out
    return call("logout", [], { wait: true }).then(loggedOut);
  }

  function currentUser() {  // Meteor.user()
    return userId === null ? null : docs("users")[userId] || null;
  }

  function showLoginError(error) {
    document.getElementById("login-error").textContent =
      (error && (error.reason || error.error)) || "could not log in";
  }

  // -- rendering -----------------------------------------------------------------------------

  function bookItems(list, collection) {
    var authors = docs("bookstore.author");
    var books = Object.keys(docs(collection)).map(function (id) {
      var book = docs(collection)[id];
      var author = authors[book.author_id] || {};
      return { id: id, title: book.title || "", author: author.name || "" };
    }).sort(function (a, b) { return a.title.localeCompare(b.title); });
    list.textContent = "";
    books.forEach(function (book) {
      var item = document.createElement("li");
      item.dataset.id = book.id;
      item.textContent = book.title + (book.author ? " by " + book.author : "");
      list.appendChild(item);
    });
    return books.length;
  }

  function render() {
    var count = bookItems(document.getElementById("books"), "bookstore.book");
    var user = currentUser();
    document.getElementById("login").hidden = userId !== null;
    document.getElementById("user").hidden = userId === null;
    document.getElementById("username").textContent =
      user ? user.username || (user.profile || {}).name || user._id : (loggingIn ? "logging in…" : "");
    document.getElementById("mine").hidden = !user;
    bookItems(document.getElementById("my-books"), "my_books");
    document.getElementById("status").textContent = connected ? count + " book(s), live" : "reconnecting…";
  }

  function swapStylesheets(assets) {
    var old = Array.prototype.slice.call(document.querySelectorAll("link.__meteor-css__"));
    assets.forEach(function (asset) {
      var link = document.createElement("link");
      link.rel = "stylesheet";
      link.className = "__meteor-css__";
      link.href = asset.url;
      link.onload = function () { old.forEach(function (l) { l.remove(); }); };
      document.head.appendChild(link);
    });
  }

  function checkVersion(id, fields) {
    if (id !== arch) return;
    var doc = docs("meteor_autoupdate_clientVersions")[id];
    if (doc.versionNonRefreshable && doc.versionNonRefreshable !== bootVersions.versionNonRefreshable) {
      location.reload();  // new code: reload (like Meteor's autoupdate client)
    } else if (fields.versionRefreshable && doc.versionRefreshable !== bootVersions.versionRefreshable) {
      bootVersions.versionRefreshable = doc.versionRefreshable;
      swapStylesheets(doc.assets || []);
    }
  }

  // -- the connection ------------------------------------------------------------------------

  function onConnected() {
    retry = 0;
    connected = true;
    collections = {};
    // Methods that got no result on the last connection go out again (as Meteor's do), after
    // the resume login; a login by token from the last connection is replaced by this one.
    Object.keys(pending).forEach(function (id) { if (pending[id].resume) delete pending[id]; });
    outbox = Object.keys(pending).map(Number).sort(function (a, b) { return a - b; })
      .map(function (id) { return pending[String(id)]; });
    waitingFor = null;
    var token = storedToken();
    if (token) resume(token, true); else flush();  // the resume login is the first message
    send({ msg: "sub", id: "books", name: "AllBooks", params: [] });
    send({ msg: "sub", id: "mybooks", name: "MyBooks", params: [] });
    send({ msg: "sub", id: "autoupdate", name: "meteor_autoupdate_clientVersions", params: [] });
    render();
  }

  function onMessage(event) {
    var msg = JSON.parse(event.data);
    switch (msg.msg) {
      case "connected":
        onConnected();
        break;
      case "ping":
        send(msg.id ? { msg: "pong", id: msg.id } : { msg: "pong" });
        break;
      case "added":
        docs(msg.collection)[msg.id] = msg.fields || {};
        if (msg.collection === "meteor_autoupdate_clientVersions") checkVersion(msg.id, msg.fields || {});
        else render();
        break;
      case "changed":
        var doc = docs(msg.collection)[msg.id] || (docs(msg.collection)[msg.id] = {});
        Object.assign(doc, msg.fields || {});
        (msg.cleared || []).forEach(function (key) { delete doc[key]; });
        if (msg.collection === "meteor_autoupdate_clientVersions") checkVersion(msg.id, msg.fields || {});
        else render();
        break;
      case "removed":
        delete docs(msg.collection)[msg.id];
        render();
        break;
      case "ready":
        render();
        break;
      case "result":
        onResult(msg);
        break;
    }
  }

  function connect() {
    socket = new WebSocket(ddpUrl());
    socket.onopen = function () { send({ msg: "connect", version: "1", support: ["1", "pre2", "pre1"] }); };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      connected = false;
      render();
      setTimeout(connect, Math.min(1000 * Math.pow(2, retry++), 10000));
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.getElementById("add").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target;
      var error = document.getElementById("error");
      error.textContent = "";
      call("books.add", [form.title.value, form.email.value, Number(form.pages.value) || 0]).then(function () {
        form.title.value = "";
      }, function (err) { error.textContent = err.reason || err.error || "could not add the book"; });
    });
    document.getElementById("login").addEventListener("submit", function (event) {
      event.preventDefault();
      var form = event.target;
      document.getElementById("login-error").textContent = "";
      loginWithPassword(form.username.value, form.password.value).then(function () {
        form.password.value = "";
      }, showLoginError);
    });
    document.getElementById("logout").addEventListener("click", function () {
      document.getElementById("login-error").textContent = "";
      logout().catch(showLoginError);
    });
    // Another tab logged in or out: follow it (Meteor polls the stored token for this).
    window.addEventListener("storage", function (event) {
      if (event.key !== TOKEN_KEY || event.newValue === event.oldValue) return;
      if (event.newValue) resume(event.newValue, false);
      else if (userId !== null) logout().catch(function () { loggedOut(); });
    });
    connect();
  });
})();
