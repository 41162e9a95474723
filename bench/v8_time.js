// The time a request spends in the filter's Wasm module under V8, as Envoy runs it (V8's
// optimizing compiler, TurboFan), measured in node outside Envoy: the module's own work, its
// host calls answered by a minimal proxy-wasm host (ABI 0.2.1), nothing of Envoy's.
//
// Complements bench.py's two other measures. Envoy's CPU per request is the judge, but moves
// by several µs between identical rounds; wasmtime fuel (wasm_work.py) never moves, but counts
// Wasm instructions, not time: a change can cut fuel by a fifth and leave V8's time as it was.
// This one is time, in the engine Envoy uses, without Envoy's noise (a few percent).
//
// usage: node bench/v8_time.js JOB.json  (written by bench.py; prints JSON results)
// JOB: {idp_port, warmup, rounds,
//       cases: [{name, wasm, configuration, requests, headers: [[name, value]], tokens_file?,
//                verify_signature?}]}
// A case with tokens_file sends a new token of that file (one per line) as
// `Authorization: Bearer` on every request. verify_signature is answered by node's crypto (as
// Envoy's by BoringSSL) and its time is left out: a new token's signature is native work. A
// case with "verify_signature": false gets no foreign function at all, as on Kong: the module
// verifies signatures itself, and that time counts.
// Rounds are interleaved over the cases; each round times the case's `requests` requests,
// after one round that is not kept.
"use strict";
const fs = require("fs");
const crypto = require("crypto");

const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, CAS_MISMATCH = 8;
const REQUEST_HEADERS = 0, CALL_RESPONSE_HEADERS = 6, CALL_RESPONSE_BODY = 4, PLUGIN_CONFIGURATION = 7;
const ROOT = 1;
// What Envoy hands a filter for the bench's requests besides the credential (as wasm_work.py).
const BASE_HEADERS = [[":authority", "127.0.0.1"], [":path", "/orders/1"], [":method", "GET"],
  [":scheme", "http"], ["user-agent", "wrk"], ["x-forwarded-proto", "http"],
  ["x-request-id", "6d3e1b8e-1f5c-4b8a-9a4e-0c2f5d7e8a91"]];
const enc = new TextEncoder(), dec = new TextDecoder();

// proxy-wasm's serialized map: count, lengths, then each name and value NUL-terminated.
function serialize(pairs) {
  const bytes = pairs.map(([n, v]) => [enc.encode(n), enc.encode(v)]);
  let size = 4 + 8 * bytes.length;
  for (const [n, v] of bytes) size += n.length + v.length + 2;
  const out = new Uint8Array(size), view = new DataView(out.buffer);
  view.setUint32(0, bytes.length, true);
  let at = 4;
  for (const [n, v] of bytes) {
    view.setUint32(at, n.length, true);
    view.setUint32(at + 4, v.length, true);
    at += 8;
  }
  for (const [n, v] of bytes) {
    out.set(n, at);
    at += n.length + 1;
    out.set(v, at);
    at += v.length + 1;
  }
  return out;
}

function deserialize(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const count = view.getUint32(0, true);
  let at = 4 + 8 * count;
  const pairs = [];
  for (let i = 0; i < count; i++) {
    const n = view.getUint32(4 + 8 * i, true), v = view.getUint32(8 + 8 * i, true);
    const name = dec.decode(data.subarray(at, at + n));
    at += n + 1;
    pairs.push([name, dec.decode(data.subarray(at, at + v))]);
    at += v + 1;
  }
  return pairs;
}

// The length-delimited fields of a protobuf message (VerifySignatureArguments: hash 1,
// public_key 2, signature 3, text 4).
function fields(bytes) {
  const out = {};
  let i = 0;
  while (i < bytes.length) {
    const tag = bytes[i++];
    let len = 0, shift = 0, b;
    do {
      b = bytes[i++];
      len |= (b & 0x7f) << shift;
      shift += 7;
    } while (b >= 0x80);
    out[tag >> 3] = bytes.subarray(i, i + len);
    i += len;
  }
  return out;
}

class Vm {
  constructor(wasmPath, configuration, idpPort, verifySignature) {
    this.idpPort = idpPort;
    this.verifySignature = verifySignature;
    this.configuration = enc.encode(configuration);
    this.requestHeaders = new Uint8Array();
    this.requestValues = new Map();
    this.callHeaders = new Uint8Array();
    this.callBody = new Uint8Array();
    this.pending = [];
    this.nextToken = 1;
    this.shared = new Map();
    this.keys = new Map();
    this.localResponse = null;
    this.lastContext = ROOT;
    this.excludedNs = 0n;
    const module = new WebAssembly.Module(fs.readFileSync(wasmPath));
    const host = this.hostFunctions();
    const imports = {};
    for (const imp of WebAssembly.Module.imports(module)) {
      imports[imp.module] = imports[imp.module] || {};
      imports[imp.module][imp.name] = host[imp.name] || (() => OK);
    }
    this.exports = new WebAssembly.Instance(module, imports).exports;
    if (this.exports._initialize) this.exports._initialize();
  }

  // Views of the module's memory, made again only when it grows: a host call makes no garbage
  // for V8's collector to pause the timing with.
  bytes() {
    const buffer = this.exports.memory.buffer;
    if (this.buffer !== buffer) {
      this.buffer = buffer;
      this.u8 = new Uint8Array(buffer);
      this.dataView = new DataView(buffer);
    }
    return this.u8;
  }
  view() {
    this.bytes();
    return this.dataView;
  }
  read(ptr, size) { return this.bytes().slice(ptr, ptr + size); }

  // Hands `data` to the module in memory it allocates, as a host does.
  give(data, ptrPtr, sizePtr) {
    const ptr = data.length ? this.exports.proxy_on_memory_allocate(data.length) : 0;
    if (data.length) this.bytes().set(data, ptr);
    this.view().setUint32(ptrPtr, ptr, true);
    this.view().setUint32(sizePtr, data.length, true);
    return OK;
  }

  hostFunctions() {
    return {
      proxy_get_log_level: (ptr) => { this.view().setUint32(ptr, 2, true); return OK; }, // info
      proxy_get_current_time_nanoseconds: (ptr) => {
        this.view().setBigUint64(ptr, BigInt(Date.now()) * 1000000n, true);
        return OK;
      },
      proxy_get_buffer_bytes: (kind, start, maxSize, ptrPtr, sizePtr) => {
        const data = kind === PLUGIN_CONFIGURATION ? this.configuration
          : kind === CALL_RESPONSE_BODY ? this.callBody : null;
        if (!data) return NOT_FOUND;
        return this.give(data.subarray(start, start + (maxSize >>> 0)), ptrPtr, sizePtr);
      },
      proxy_get_header_map_pairs: (kind, ptrPtr, sizePtr) => this.give(
        kind === REQUEST_HEADERS ? this.requestHeaders
          : kind === CALL_RESPONSE_HEADERS ? this.callHeaders : serialize([]), ptrPtr, sizePtr),
      proxy_get_header_map_value: (kind, namePtr, nameSize, ptrPtr, sizePtr) => {
        if (kind !== REQUEST_HEADERS) return NOT_FOUND;
        const value = this.requestValues.get(dec.decode(this.read(namePtr, nameSize)).toLowerCase());
        return value ? this.give(value, ptrPtr, sizePtr) : NOT_FOUND;
      },
      proxy_get_property: () => NOT_FOUND,
      proxy_call_foreign_function: (namePtr, nameSize, argsPtr, argsSize, ptrPtr, sizePtr) => {
        const started = process.hrtime.bigint();
        if (!this.verifySignature || dec.decode(this.read(namePtr, nameSize)) !== "verify_signature") {
          return NOT_FOUND;
        }
        const f = fields(this.read(argsPtr, argsSize));
        const der = Buffer.from(f[2]);
        const id = der.toString("base64");
        if (!this.keys.has(id)) this.keys.set(id, crypto.createPublicKey({ key: der, format: "der", type: "spki" }));
        let valid = false;
        try {
          valid = crypto.verify(dec.decode(f[1]), f[4], { key: this.keys.get(id), dsaEncoding: "der" }, f[3]);
        } catch (_) {
          valid = false;
        }
        // A serialized VerifySignatureResult: result = true, or the default (false).
        const status = this.give(valid ? new Uint8Array([8, 1]) : new Uint8Array(), ptrPtr, sizePtr);
        this.excludedNs += process.hrtime.bigint() - started;
        return status;
      },
      proxy_define_metric: (kind, namePtr, nameSize, idPtr) => { this.view().setUint32(idPtr, 1, true); return OK; },
      proxy_get_shared_data: (keyPtr, keySize, ptrPtr, sizePtr, casPtr) => {
        const key = dec.decode(this.read(keyPtr, keySize));
        if (!this.shared.has(key)) return NOT_FOUND;
        const [value, cas] = this.shared.get(key);
        this.view().setUint32(casPtr, cas, true);
        return this.give(value, ptrPtr, sizePtr);
      },
      proxy_set_shared_data: (keyPtr, keySize, valuePtr, valueSize, cas) => {
        // A missing key is created whatever the CAS; an existing one only with a matching CAS.
        const key = dec.decode(this.read(keyPtr, keySize));
        const current = this.shared.get(key);
        if (current && cas && cas !== current[1]) return CAS_MISMATCH;
        this.shared.set(key, [this.read(valuePtr, valueSize), (current ? current[1] : 0) + 1]);
        return OK;
      },
      proxy_send_local_response: (status) => { this.localResponse = status; return OK; },
      // As Envoy: an id that names no context is refused (the filter probes this to learn
      // whether the host can resume another request than the current one).
      proxy_set_effective_context: (id) => (id >>> 0) <= this.lastContext ? OK : BAD_ARGUMENT,
      proxy_http_call: (upPtr, upSize, headersPtr, headersSize, bodyPtr, bodySize, trPtr, trSize, timeout, tokenPtr) => {
        const headers = Object.fromEntries(deserialize(this.read(headersPtr, headersSize)));
        const body = bodySize ? this.read(bodyPtr, bodySize) : undefined;
        const token = this.nextToken++;
        this.pending.push({ token, headers, body });
        this.view().setUint32(tokenPtr, token, true);
        return OK;
      },
    };
  }

  // Answers the callouts made so far from the bench IdP, over HTTP on 127.0.0.1.
  async answerCallouts(contextId) {
    for (let turn = 0; turn < 20 && this.pending.length; turn++) {
      const { token, headers, body } = this.pending.shift();
      const sent = Object.fromEntries(Object.entries(headers).filter(([n]) => !n.startsWith(":")));
      const response = await fetch(`http://127.0.0.1:${this.idpPort}${headers[":path"]}`,
        { method: headers[":method"], headers: sent, body, signal: AbortSignal.timeout(10000) });
      const answer = new Uint8Array(await response.arrayBuffer());
      this.callHeaders = serialize([[":status", String(response.status)], ...response.headers]);
      this.callBody = answer;
      this.exports.proxy_on_http_call_response(contextId, token, 1, answer.length, 0);
    }
  }

  async configure() {
    this.exports.proxy_on_context_create(ROOT, 0);
    if (!this.exports.proxy_on_configure(ROOT, this.configuration.length)) throw new Error("configuration refused");
    for (let tick = 0; tick < 20; tick++) {
      if (this.exports.proxy_on_tick) this.exports.proxy_on_tick(ROOT);
      await this.answerCallouts(ROOT);
    }
  }

  // One request ([serialized headers, count, values by name]); true if it went on upstream
  // at once (nothing to wait for, no local reply).
  request(contextId, [headers, count, values]) {
    this.requestHeaders = headers;
    this.requestValues = values;
    this.localResponse = null;
    this.lastContext = contextId;
    this.exports.proxy_on_context_create(contextId, ROOT);
    const action = this.exports.proxy_on_request_headers(contextId, count, 1);
    const through = action === 0 && this.localResponse === null && this.pending.length === 0;
    if (this.pending.length === 0) this.exports.proxy_on_delete(contextId);
    return through;
  }

  // A request during warm-up: its callouts (a credential seen the first time) are answered.
  async warmRequest(contextId, [headers, count, values]) {
    this.requestHeaders = headers;
    this.requestValues = values;
    this.lastContext = contextId;
    this.exports.proxy_on_context_create(contextId, ROOT);
    this.exports.proxy_on_request_headers(contextId, count, 1);
    await this.answerCallouts(contextId);
    this.exports.proxy_on_delete(contextId);
  }
}

// A case's requests, one after the other, as the host holds them: serialized for a header map
// read, and by name for a one-header read.
function requestsOf(c, job) {
  const base = (extra) => {
    const all = BASE_HEADERS.concat(extra);
    return [serialize(all), all.length, new Map(all.map(([n, v]) => [n, enc.encode(v)]))];
  };
  if (!c.tokens_file) {
    const one = base(c.headers);
    return () => one;
  }
  const needed = job.warmup + (job.rounds + 1) * c.requests;
  const tokens = fs.readFileSync(c.tokens_file, "utf8").split("\n", needed).filter((t) => t);
  if (tokens.length < needed) throw new Error(`${c.tokens_file}: ${tokens.length} tokens, ${needed} needed`);
  let next = 0;
  return () => base([["authorization", `Bearer ${tokens[next++]}`]]);
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const results = {};
  const runs = [];
  for (const c of job.cases) {
    try {
      const vm = new Vm(c.wasm, c.configuration, job.idp_port, c.verify_signature !== false);
      await vm.configure();
      const next = requestsOf(c, job);
      for (let i = 0; i < job.warmup; i++) await vm.warmRequest(100 + i, next());
      runs.push({ c, vm, next, contextId: 100 + job.warmup });
      results[c.name] = { ns_per_request: [] };
    } catch (e) {
      results[c.name] = { error: String(e.message || e) };
    }
  }
  // Round 0 is not kept: the first requests of a process run while V8 and its collector settle.
  for (let round = 0; round <= job.rounds; round++) {
    for (const run of runs) {
      const result = results[run.c.name];
      if (result.error) continue;
      const batch = Array.from({ length: run.c.requests }, run.next);
      if (global.gc) global.gc();
      run.vm.excludedNs = 0n;
      const started = process.hrtime.bigint();
      let through = 0;
      for (const request of batch) through += run.vm.request(run.contextId++, request) ? 1 : 0;
      const elapsed = process.hrtime.bigint() - started - run.vm.excludedNs;
      if (through !== batch.length) {
        result.error = `${batch.length - through} of ${batch.length} requests were not let through at once`;
        continue;
      }
      if (round > 0) result.ns_per_request.push(Number(elapsed) / batch.length);
    }
  }
  process.stdout.write(JSON.stringify({ node: process.version, results }) + "\n");
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
