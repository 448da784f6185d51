// The bookstore's front end: a minimal DDP client in plain JavaScript, shipped as a bundle in
// `meteor build`'s format.  It reads __meteor_runtime_config__ like a Meteor client, lists
// the books of the AllBooks publication live, adds books through the books.add method, and
// follows hot code push (meteor_autoupdate_clientVersions): a new version reloads the page,
// a CSS-only change swaps the stylesheet.
(function () {
  "use strict";
  var config = window.__meteor_runtime_config__ || {};
  var arch = config.isModern ? "web.browser" : "web.browser.legacy";
  var bootVersions = ((config.autoupdate || {}).versions || {})[arch] || {};
  var collections = {};  // name -> id -> fields
  var socket = null, nextId = 1, pending = {}, retry = 0;

  function docs(name) { return collections[name] || (collections[name] = {}); }

  function ddpUrl() {
    var base = config.DDP_DEFAULT_CONNECTION_URL || config.ROOT_URL || (location.origin + "/");
    return base.replace(/^http/, "ws").replace(/\/?$/, "/websocket");
  }

  function send(msg) { if (socket && socket.readyState === 1) socket.send(JSON.stringify(msg)); }

  function call(method, params) {
    return new Promise(function (resolve, reject) {
      var id = String(nextId++);
      pending[id] = { resolve: resolve, reject: reject };
      send({ msg: "method", method: method, params: params, id: id });
    });
  }

  function render() {
    var list = document.getElementById("books");
    var status = document.getElementById("status");
    var authors = docs("bookstore.author");
    var books = Object.keys(docs("bookstore.book")).map(function (id) {
      var book = docs("bookstore.book")[id];
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
    status.textContent = books.length + " book(s), live";
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

  function onMessage(event) {
    var msg = JSON.parse(event.data);
    switch (msg.msg) {
      case "connected":
        retry = 0;
        collections = {};
        send({ msg: "sub", id: "books", name: "AllBooks", params: [] });
        send({ msg: "sub", id: "autoupdate", name: "meteor_autoupdate_clientVersions", params: [] });
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
        var call = pending[msg.id];
        delete pending[msg.id];
        if (call) msg.error ? call.reject(msg.error) : call.resolve(msg.result);
        break;
    }
  }

  function connect() {
    socket = new WebSocket(ddpUrl());
    socket.onopen = function () { send({ msg: "connect", version: "1", support: ["1", "pre2", "pre1"] }); };
    socket.onmessage = onMessage;
    socket.onclose = function () {
      document.getElementById("status").textContent = "reconnecting…";
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
    connect();
  });
})();
