// Meteor's login flow through npm simpleddp + simpleddp-plugin-login (a third-party client):
// log in with a SHA-256 digest, drop the connection, let the plugin resume with its token on
// reconnect, then log out.  Usage: node simpleddp_login.js PORT USERNAME PASSWORD
// Prints one JSON line with what happened.
const crypto = require("crypto");
const WebSocket = require("ws");
const simpleDDP = require("simpleddp");
const { simpleDDPLogin } = require("simpleddp-plugin-login");

const [port, username, password] = process.argv.slice(2);
const out = {};
const done = (extra) => {
  console.log(JSON.stringify({ ...out, ...extra }));
  process.exit(0);
};
setTimeout(() => done({ ok: false, error: "timeout" }), 20000);

function usersDocs(server) {
  return (server.collections && server.collections.users || []).map((d) => d);
}

async function main() {
  const server = new simpleDDP({
    endpoint: `ws://127.0.0.1:${port}/websocket`,
    SocketConstructor: WebSocket,
    reconnectInterval: 200,
  }, [simpleDDPLogin]);
  await server.connect();
  const digest = crypto.createHash("sha256").update(password).digest("hex");
  const login = await server.login({ user: { username }, password: { digest, algorithm: "sha-256" } });
  out.login = { id: login.id, type: login.type, tokenLength: login.token.length,
                tokenExpires: login.tokenExpires };
  await new Promise((r) => setTimeout(r, 300));
  out.usersAfterLogin = usersDocs(server);

  const resumed = new Promise((resolve, reject) => {
    server.on("loginResume", resolve);
    server.on("loginResumeFailed", reject);
  });
  server.disconnect();
  await new Promise((r) => setTimeout(r, 200));
  server.connect();
  const resume = await resumed;
  out.resume = { id: resume.id, type: resume.type, sameToken: resume.token === server.token };
  out.tokenAfterResume = server.token === login.token;
  await new Promise((r) => setTimeout(r, 300));
  out.usersAfterResume = usersDocs(server);

  await server.logout();
  try {
    await server.call("getNewToken");
    out.afterLogout = "still logged in";
  } catch (e) {
    out.afterLogout = e.error;
  }
  out.loggedInAfterLogout = server._loggedIn;
  server.disconnect();
  done({ ok: true });
}

main().catch((e) => done({ ok: false, error: String(e && (e.reason || e.message || e.error) || e) }));
