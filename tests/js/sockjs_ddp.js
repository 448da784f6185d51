// DDP over sockjs-client forced onto ONE transport: connect, subscribe, call a method, then
// wait for a live change (a document added to the subscription after it was ready).
// Usage: node sockjs_ddp.js URL TRANSPORT PUBLICATION METHOD JSON_PARAMS
//   URL like http://127.0.0.1:8000/sockjs; TRANSPORT: websocket, xhr-streaming, xhr-polling,
//   eventsource, ...
// Prints JSON lines: {"event":"ready",...} once subscribed and the method answered (the
// caller then makes a change), and a last line {"ok":true|false,...}.
const SockJS = require("sockjs-client");

const [url, transport, publication, method, paramsJson = "[]"] = process.argv.slice(2);
const print = (value) => console.log(JSON.stringify(value));
const sock = new SockJS(url, null, { transports: [transport] });
const state = { docs: {}, live: [], result: undefined, session: null, ready: false };
let finished = false;

const finish = (ok, extra) => {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  print({ ok, transport: sock.transport, session: state.session, result: state.result,
          initial: state.initialDocs, live: state.live, ...extra });
  sock.close();
  setTimeout(() => process.exit(ok ? 0 : 1), 200);
};
const timer = setTimeout(() => finish(false, { error: "timeout" }), 30000);
const send = (message) => sock.send(JSON.stringify(message));
// Once the method has its result and its "updated": the documents so far are the initial ones.
const announceReady = () => {
  if (!state.answered || !state.updated || state.initialDocs) return;
  state.initialDocs = state.docs;
  print({ event: "ready", transport: sock.transport, session: state.session, result: state.result });
};

sock.onopen = () => send({ msg: "connect", version: "1", support: ["1"] });
sock.onclose = (event) => finish(false, { error: "closed", code: event.code, reason: event.reason });
sock.onmessage = (event) => {
  const message = JSON.parse(event.data);
  switch (message.msg) {
    case "ping":
      send({ msg: "pong", id: message.id });
      break;
    case "connected":
      state.session = message.session;
      send({ msg: "sub", id: "s1", name: publication, params: [] });
      break;
    case "added":
      if (state.initialDocs) state.live.push({ collection: message.collection, id: message.id,
                                               fields: message.fields });
      else state.docs[message.id] = message.fields;
      if (state.initialDocs && state.live.length === 1) finish(true);
      break;
    case "ready":
      send({ msg: "method", id: "m1", method, params: JSON.parse(paramsJson) });
      break;
    case "result":
      if (message.error) return finish(false, { error: message.error });
      state.result = message.result;
      state.answered = true;
      announceReady();
      break;
    case "updated":
      state.updated = true;
      announceReady();
      break;
    case "nosub":
      finish(false, { error: message.error || "nosub" });
      break;
    default:
      break;
  }
};
