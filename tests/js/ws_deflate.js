// npm `ws` with permessage-deflate (it offers it by default; threshold 0 compresses every
// message it sends too): connect to /websocket, add 20 books, subscribe to AllBooks, rename
// one and wait for the change.  Usage: node ws_deflate.js PORT
// Prints one JSON line: the negotiated extension, what arrived, bytes on the wire
// (socket.bytesRead) and bytes of the messages once inflated.
const WebSocket = require("ws");

const [port] = process.argv.slice(2);
const ws = new WebSocket(`ws://127.0.0.1:${port}/websocket`, {
  perMessageDeflate: { threshold: 0, clientNoContextTakeover: true },
});
const out = { added: 0, changed: false, messageBytes: 0 };
const fail = (error) => {
  console.log(JSON.stringify({ ...out, ok: false, error: String(error) }));
  process.exit(1);
};
setTimeout(() => fail("timeout"), 30000);
ws.on("error", fail);
ws.on("upgrade", (response) => { out.header = response.headers["sec-websocket-extensions"]; });

const send = (msg) => ws.send(JSON.stringify(msg));
const longTitle = (i) => `Book ${i}: ` + "a story of databases and websockets, told at length; ".repeat(3);
let bookId = null;

ws.on("open", () => {
  out.extensions = ws.extensions;
  send({ msg: "connect", version: "1", support: ["1"] });
});

ws.on("message", (data) => {
  out.messageBytes += data.length;
  const msg = JSON.parse(data.toString("utf8"));
  if (msg.msg === "ping") return send({ msg: "pong", id: msg.id });
  if (msg.msg === "connected") {
    for (let i = 0; i < 20; i++) {
      send({ msg: "method", method: "books.add", id: `add${i}`, params: [longTitle(i), "ada@example.com", i] });
    }
  } else if (msg.msg === "result" && msg.id === "add19") {
    bookId = msg.result;
    send({ msg: "sub", id: "all", name: "AllBooks", params: [] });
  } else if (msg.msg === "added" && msg.collection === "bookstore.book") {
    out.added += 1;
  } else if (msg.msg === "ready") {
    send({ msg: "method", method: "books.rename", id: "rename", params: [bookId, longTitle("renamed")] });
  } else if (msg.msg === "changed" && msg.collection === "bookstore.book") {
    out.changed = msg.fields.title === longTitle("renamed");
    out.bytesRead = ws._socket.bytesRead;
    out.ok = true;
    console.log(JSON.stringify(out));
    ws.close();
    process.exit(0);
  } else if (msg.msg === "result" && msg.error) {
    fail(JSON.stringify(msg.error));
  }
});
