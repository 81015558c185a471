#!/usr/bin/env node
// A second MCP client for the interop tests: the official TypeScript SDK over streamable HTTP.
//
//   node ts_client.mjs URL TOKEN list                 -> stdout: JSON array of the tool names
//   node ts_client.mjs URL TOKEN call NAME ARGS_JSON  -> stdout: the tools/call result as JSON
//
// TOKEN "" sends no Authorization header.
// Exit codes: 0 success; 1 any other error; 2 usage; 3 HTTP 401; 4 HTTP 403; 5 the tool result has isError
// (the result is still printed). On error, stderr gets one JSON line {"error": MESSAGE, "http_status": N|null}.
// Env TS_CLIENT_TIMEOUT_MS bounds the whole run (default 30000).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const USAGE = "usage: node ts_client.mjs URL TOKEN list | node ts_client.mjs URL TOKEN call NAME ARGS_JSON";

function fail(message, httpStatus, exitCode) {
  process.stderr.write(`${JSON.stringify({ error: message, http_status: httpStatus ?? null })}\n`);
  process.exit(exitCode);
}

function httpStatusOf(err) {
  if (err instanceof StreamableHTTPError && typeof err.code === "number" && err.code >= 100) return err.code;
  return null;
}

async function main() {
  const [url, token, command, ...rest] = process.argv.slice(2);
  if (url === undefined || token === undefined || command === undefined) fail(USAGE, null, 2);
  let toolName;
  let toolArgs;
  if (command === "list") {
    if (rest.length !== 0) fail(USAGE, null, 2);
  } else if (command === "call") {
    if (rest.length !== 2) fail(USAGE, null, 2);
    toolName = rest[0];
    try {
      toolArgs = JSON.parse(rest[1]);
    } catch (err) {
      fail(`ARGS_JSON is not JSON: ${err.message}`, null, 2);
    }
    if (toolArgs === null || typeof toolArgs !== "object" || Array.isArray(toolArgs)) {
      fail("ARGS_JSON must be a JSON object", null, 2);
    }
  } else {
    fail(USAGE, null, 2);
  }

  const timeoutMs = Number(process.env.TS_CLIENT_TIMEOUT_MS ?? "30000");
  setTimeout(() => fail(`timed out after ${timeoutMs} ms`, null, 1), timeoutMs).unref();

  const headers = token === "" ? {} : { Authorization: `Bearer ${token}` };
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  const client = new Client({ name: "mandate-interop-ts-client", version: "0.0.0" });

  let exitCode = 0;
  try {
    await client.connect(transport);
    if (command === "list") {
      const names = [];
      let cursor;
      do {
        const page = await client.listTools(cursor === undefined ? {} : { cursor });
        for (const tool of page.tools) names.push(tool.name);
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      process.stdout.write(`${JSON.stringify(names)}\n`);
    } else {
      const result = await client.callTool({ name: toolName, arguments: toolArgs });
      process.stdout.write(`${JSON.stringify(result)}\n`);
      if (result.isError === true) exitCode = 5;
    }
  } catch (err) {
    const status = httpStatusOf(err);
    const code = status === 401 ? 3 : status === 403 ? 4 : 1;
    fail(err instanceof Error ? err.message : String(err), status, code);
  }
  try {
    await client.close();
  } catch {
    // Closing is best effort; the result is already out.
  }
  process.exit(exitCode);
}

main().catch((err) => fail(err instanceof Error ? err.message : String(err), null, 1));
