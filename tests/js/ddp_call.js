// Connect with the npm `ddp` client, call a method, subscribe, print one JSON line.
// Usage: node ddp_call.js PORT METHOD [JSON_PARAMS] [PUBLICATION]
const DDPClient = require("ddp");

const [port, method, paramsJson = "[]", publication] = process.argv.slice(2);
const client = new DDPClient({
  host: "127.0.0.1", port: Number(port), ssl: false, autoReconnect: false,
  maintainCollections: true, ddpVersion: "1", useSockJs: process.env.USE_SOCKJS === "1",
});

const fail = (what, err) => {
  console.log(JSON.stringify({ ok: false, what, error: err }));
  process.exit(1);
};
const timer = setTimeout(() => fail("timeout", "no answer in 10 s"), 10000);

client.connect((error, wasReconnect) => {
  if (error) return fail("connect", String(error));
  client.call(method, JSON.parse(paramsJson), (err, result) => {
    if (err) return fail("call", err);
    const finish = (docs) => {
      clearTimeout(timer);
      console.log(JSON.stringify({ ok: true, session: client.session, result, docs }));
      client.close();
    };
    if (!publication) return finish(null);
    client.subscribe(publication, [2], () => finish(client.collections[publication] || {}));
  });
});
