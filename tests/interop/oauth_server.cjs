#!/usr/bin/env node
// A real OAuth 2 authorization server for the interop tests: oauth2-mock-server (npm), bound to 127.0.0.1.
//
//   node oauth_server.cjs PORT [JWK_FILE]
//
// PORT     TCP port on 127.0.0.1; 0 lets the operating system pick one (the chosen port is printed).
// JWK_FILE optional path of a private RS256 JWK. If it exists it is loaded, otherwise a new key is generated
//          and written there, so a restarted server keeps signing with the same key.
//
// Prints exactly one line "READY <port>" on stdout once it listens; issuer (and `iss`) is http://127.0.0.1:<port>.
//
// Mint:  POST /token  (application/x-www-form-urlencoded)
//   grant_type=client_credentials&client_id=agent-1&scope=customers:read orders:read&aud=http://127.0.0.1:P/mcp
// Extra form fields understood by the signing hook below:
//   sub=NAME     the token's `sub` (default: the client_id)
//   expired=1    issue a token that expired 10 minutes ago
//   typ=at+jwt   the JOSE header `typ` (default: the library's "JWT")
//   scope_as=C   move the granted scopes out of `scope` into claim C, as real servers do: `scp` (a space-separated
//                string, Entra ID delegated), `scp_list` (`scp` as a list, Okta), `roles` (Entra ID app roles) or
//                `permissions` (Auth0 RBAC), both lists
// JWKS: GET /jwks; discovery: GET /.well-known/openid-configuration.
// Env OAUTH_SERVER_EXIT_ON_STDIN_EOF=1: exit when stdin reaches end of file (the tests set it).
"use strict";

const fs = require("node:fs");

function usage(message) {
  process.stderr.write(`${message}\nusage: node oauth_server.cjs PORT [JWK_FILE]\n`);
  process.exit(2);
}

function formField(body, name) {
  if (body === null || typeof body !== "object") return undefined;
  const value = body[name];
  if (Array.isArray(value)) return value.length > 0 ? String(value[value.length - 1]) : undefined;
  return value === undefined ? undefined : String(value);
}

async function main() {
  const [portArg, jwkFile] = process.argv.slice(2);
  if (portArg === undefined || !/^\d+$/.test(portArg)) usage("PORT must be a number");
  const port = Number(portArg);
  if (port > 65535) usage("PORT out of range");

  const { OAuth2Server, Events } = await import("oauth2-mock-server");
  const server = new OAuth2Server();

  if (jwkFile !== undefined && fs.existsSync(jwkFile)) {
    await server.issuer.keys.add(JSON.parse(fs.readFileSync(jwkFile, "utf8")));
  } else {
    const key = await server.issuer.keys.generate("RS256");
    if (jwkFile !== undefined) {
      fs.writeFileSync(jwkFile, JSON.stringify(key), { mode: 0o600 });
    }
  }

  server.service.on(Events.BeforeTokenSigning, (token, req) => {
    const body = req.body;
    const clientId = formField(body, "client_id");
    const sub = formField(body, "sub") ?? clientId;
    if (clientId !== undefined) token.payload.client_id = clientId;
    if (sub !== undefined) token.payload.sub = sub;

    const aud = body === null || typeof body !== "object" ? undefined : body.aud;
    if (aud === undefined || aud === "") delete token.payload.aud;
    else token.payload.aud = aud;

    if (formField(body, "expired") === "1") {
      const now = Math.floor(Date.now() / 1000);
      token.payload.iat = now - 3600;
      token.payload.nbf = now - 3610;
      token.payload.exp = now - 600;
    }

    const scopeAs = formField(body, "scope_as");
    if (scopeAs !== undefined && scopeAs !== "") {
      const granted = String(token.payload.scope ?? "").split(" ").filter((s) => s !== "");
      delete token.payload.scope;
      if (scopeAs === "scp") token.payload.scp = granted.join(" ");
      else if (scopeAs === "scp_list") token.payload.scp = granted;
      else token.payload[scopeAs] = granted;
    }

    const typ = formField(body, "typ");
    if (typ !== undefined && typ !== "") token.header.typ = typ;
  });

  await server.start(port, "127.0.0.1");
  const bound = server.address().port;
  server.issuer.url = `http://127.0.0.1:${bound}`;

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    server.stop().finally(() => process.exit(0));
    // Do not hang on keep-alive connections.
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  if (process.env.OAUTH_SERVER_EXIT_ON_STDIN_EOF === "1") {
    // The test run holds our stdin open; when it goes away (even killed), stop too: no orphaned issuer.
    process.stdin.on("end", stop);
    process.stdin.on("error", stop);
    process.stdin.resume();
  }

  process.stdout.write(`READY ${bound}\n`);
}

main().catch((err) => {
  process.stderr.write(`oauth_server: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
