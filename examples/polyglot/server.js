#!/usr/bin/env node
// A small HTTP service in another language: an instance that a mesh node (its agent)
// registers and health-checks, reached by users through any node's gateway
// (docs/polyglot.md). Node.js' own `http` module only: no npm package, runs on Debian's
// nodejs (18) and later.
//
//   PORT=3000 HOST=0.0.0.0 INSTANCE_NAME=hello-1 node server.js
//   node server.js --check        exit 0 when this host's instance answers /health with 200
//
// Routes (the service's name, SERVICE_NAME, default `hello`, may prefix any of them, as the
// gateway forwards `/<service>/<rest>` unchanged):
//   GET  /health                 200 {"status": "passing"}, or 503 once failing
//   POST /health/fail, /health/ok   make /health fail (503) or pass again
//   GET  /hello/stream?chunks=5&interval_ms=400   chunked: one JSON line a chunk, spaced out
//   GET  /hello/bytes?n=N        N bytes (Content-Length), byte i = i % 251 (a pattern a
//                                client can check without keeping the whole body)
//   *    /hello/echo             the request body back, streamed, with its Content-Type
//   GET  /hello/sleep?ms=N       answers after N ms (a slow instance)
//   GET  /hello/status/NNN       answers with that status
//   GET  /hello/close            closes the connection without answering
//   anything else                200 JSON: the instance, the method, the path and query
// Every answer carries `X-Instance: <instance name>`. SIGTERM or SIGINT: stop accepting,
// finish what is in flight (at most 2 s), exit 0.
"use strict";

const http = require("http");
const os = require("os");

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || "0.0.0.0";
const INSTANCE = process.env.INSTANCE_NAME || os.hostname();
const SERVICE = process.env.SERVICE_NAME || "hello";
const PATTERN = 251; // byte i of /bytes is i % 251
const MAX_BYTES = 1 << 30; // /bytes?n= at most 1 GiB
const CHUNK = 64 * 1024;

function log(msg, fields) {
  process.stdout.write(
    JSON.stringify({ ts: new Date().toISOString(), msg, instance: INSTANCE, ...fields }) + "\n",
  );
}

function check() {
  // The container's health check (no curl in the image): GET /health on 127.0.0.1.
  const req = http.get({ host: "127.0.0.1", port: PORT, path: "/health", timeout: 2000 }, (res) => {
    res.resume();
    process.exit(res.statusCode === 200 ? 0 : 1);
  });
  req.on("timeout", () => req.destroy(new Error("timeout")));
  req.on("error", () => process.exit(1));
}

let healthy = true;
let served = 0;

function send(res, status, doc) {
  const body = JSON.stringify(doc) + "\n";
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  });
  res.end(body);
}

function intParam(query, name, fallback, max) {
  const raw = query.get(name);
  if (raw === null) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > max) return null;
  return value;
}

// One block of the /bytes pattern, starting at a multiple of PATTERN so it repeats exactly.
const BLOCK = Buffer.alloc(PATTERN * Math.ceil(CHUNK / PATTERN));
for (let i = 0; i < BLOCK.length; i++) BLOCK[i] = i % PATTERN;

function bytes(res, n) {
  res.writeHead(200, {
    "Content-Type": "application/octet-stream",
    "Content-Length": n,
    "X-Pattern": `byte i is i % ${PATTERN}`,
  });
  let sent = 0;
  const more = () => {
    while (sent < n) {
      const offset = sent % PATTERN;
      const size = Math.min(n - sent, BLOCK.length - offset);
      const ok = res.write(BLOCK.subarray(offset, offset + size));
      sent += size;
      if (!ok) return res.once("drain", more); // the client reads slowly: wait for it
    }
    res.end();
  };
  res.on("close", () => { sent = n; }); // the client went away: stop writing
  more();
}

function stream(res, chunks, interval) {
  res.writeHead(200, { "Content-Type": "application/x-ndjson" }); // no length: chunked
  let i = 0;
  const timer = setInterval(() => {
    res.write(JSON.stringify({ chunk: i, of: chunks, instance: INSTANCE, at: Date.now() }) + "\n");
    i += 1;
    if (i >= chunks) {
      clearInterval(timer);
      res.end();
    }
  }, interval);
  res.on("close", () => clearInterval(timer));
}

function handle(req, res) {
  served += 1;
  res.setHeader("X-Instance", INSTANCE);
  const url = new URL(req.url, "http://localhost");
  // the gateway forwards /<service>/<rest> unchanged: route on <rest>
  let rest = url.pathname;
  if (rest === `/${SERVICE}` || rest.startsWith(`/${SERVICE}/`)) {
    rest = rest.slice(SERVICE.length + 1) || "/";
  }
  const query = url.searchParams;

  if (rest === "/health") {
    return send(res, healthy ? 200 : 503, { status: healthy ? "passing" : "failing", instance: INSTANCE });
  }
  if (req.method === "POST" && (rest === "/health/fail" || rest === "/health/ok")) {
    healthy = rest === "/health/ok";
    log("health set", { healthy });
    return send(res, 200, { status: healthy ? "passing" : "failing", instance: INSTANCE });
  }
  if (rest === "/echo") {
    res.writeHead(200, {
      "Content-Type": req.headers["content-type"] || "application/octet-stream",
    });
    return req.pipe(res); // streamed both ways: nothing held whole
  }
  if (rest === "/stream") {
    const chunks = intParam(query, "chunks", 5, 10000);
    const interval = intParam(query, "interval_ms", 400, 60000);
    if (chunks === null || interval === null) {
      return send(res, 400, { error: "chunks and interval_ms must be whole numbers" });
    }
    return stream(res, chunks, interval);
  }
  if (rest === "/bytes") {
    const n = intParam(query, "n", 1024, MAX_BYTES);
    if (n === null) return send(res, 400, { error: `n must be a whole number up to ${MAX_BYTES}` });
    return bytes(res, n);
  }
  if (rest === "/sleep") {
    const ms = intParam(query, "ms", 1000, 600000);
    if (ms === null) return send(res, 400, { error: "ms must be a whole number" });
    const timer = setTimeout(() => send(res, 200, { slept_ms: ms, instance: INSTANCE }), ms);
    res.on("close", () => clearTimeout(timer));
    return undefined;
  }
  const status = /^\/status\/([1-5][0-9][0-9])$/.exec(rest);
  if (status) {
    return send(res, Number(status[1]), { status: Number(status[1]), instance: INSTANCE });
  }
  if (rest === "/close") {
    return req.socket.destroy(); // no answer at all: the caller sees the connection close
  }
  req.resume(); // a body nobody reads must not stall the connection
  return send(res, 200, {
    service: SERVICE,
    instance: INSTANCE,
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(query),
    served,
    forwarded_for: req.headers["x-forwarded-for"] || null,
  });
}

function main() {
  if (process.argv.includes("--check")) return check();
  const server = http.createServer(handle);
  // Longer than a gateway's pool keeps an idle connection (aiohttp: 15 s), so the app is
  // not the side that closes a kept-alive connection just as the gateway reuses it.
  server.keepAliveTimeout = Number(process.env.KEEPALIVE_MS || 65000);
  server.headersTimeout = server.keepAliveTimeout + 1000;
  server.on("error", (err) => {
    log("cannot listen", { error: err.message, host: HOST, port: PORT });
    process.exit(2);
  });
  server.listen(PORT, HOST, () => log("listening", { service: SERVICE, host: HOST, port: PORT }));

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log("stopping", { signal });
    server.close(() => process.exit(0)); // after the requests in flight
    if (server.closeIdleConnections) server.closeIdleConnections(); // node >= 18.2
    setTimeout(() => process.exit(0), 2000).unref(); // a stream still open: cut it
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  return undefined;
}

main();
