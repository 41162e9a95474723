#!/usr/bin/env node
// The benchmark's identity provider: zero npm dependencies (node:http + node:crypto).
//
//   node bench/idp.js keygen --keys FILE
//       Creates FILE (20 RSA-2048 keys rsa-0..rsa-19 and one P-256 key ec-0) unless it exists.
//   node bench/idp.js serve --keys FILE [--port N] [--keys-cache-control VALUE]
//       Serves on 127.0.0.1:N (0: any free port) and prints "idp listening on http://127.0.0.1:PORT".
//       Discovery and JWKS answers carry no Cache-Control unless --keys-cache-control gives one
//       (for example "no-store", as some IdPs send, or "public, max-age=300").
//   node bench/idp.js mint --keys FILE --issuer URL --alg RS256|ES256|PS256 --count N --out FILE
//                          [--kid KID] [--client-id ID]
//       Writes N valid access tokens, one a line, each with its own jti, signed with the keys
//       the server publishes.
//
// Three issuers share the server and the keys:
//   http://127.0.0.1:PORT       discovery /.well-known/openid-configuration, /jwks: rsa-0 + ec-0
//   http://127.0.0.1:PORT/k20   discovery /k20/.well-known/openid-configuration,
//                               /k20/jwks: rsa-1..rsa-19, rsa-0, ec-0 (20 RSA keys + 1 EC)
//   http://127.0.0.1:PORT/ps    discovery /ps/.well-known/openid-configuration,
//                               /ps/jwks: ps-0 (rsa-1's key, for PS256)
// All three name /token (client_credentials) and /token/introspection as their endpoints.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const AUDIENCE = 'https://api.example.com';
const SCOPE = 'orders:read';
// The application the benchmark calls as (client_credentials, and the tokens' client_id).
const CLIENT_ID = 'bench-client';
const CLIENT_SECRET = 'bench-client-secret';
// The resource server the filter introspects as.
const RS_CLIENT_ID = 'bench-resource-server';
const RS_CLIENT_SECRET = 'bench-resource-server-secret';
// The one opaque token the introspection endpoint calls active.
const OPAQUE_TOKEN = 'bench-opaque-token-5b0c7e2f9d41a6';
const RSA_KEYS = 20;

function args(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const name = a.slice(2);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) out[name] = true;
      else { out[name] = next; i++; }
    } else out._.push(a);
  }
  return out;
}

function die(msg) {
  process.stderr.write(`idp.js: ${msg}\n`);
  process.exit(2);
}

// ---- keys ----------------------------------------------------------------------------

function keygen(file) {
  if (fs.existsSync(file)) return;
  const keys = { rsa: [], ec: null };
  for (let i = 0; i < RSA_KEYS; i++) {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 65537 });
    keys.rsa.push({ kid: `rsa-${i}`, pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) });
  }
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  keys.ec = { kid: 'ec-0', pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) };
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(keys), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function loadKeys(file) {
  if (!file) die('--keys FILE is required');
  if (!fs.existsSync(file)) die(`no keys at ${file} (run: node bench/idp.js keygen --keys ${file})`);
  const raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byKid = new Map();
  const pub = (kid, pem, alg) => {
    const privateKey = crypto.createPrivateKey(pem);
    const jwk = crypto.createPublicKey(privateKey).export({ format: 'jwk' });
    const entry = { kid, alg, privateKey, jwk: { ...jwk, kid, alg, use: 'sig' } };
    byKid.set(kid, entry);
    return entry;
  };
  const rsa = raw.rsa.map((k) => pub(k.kid, k.pem, 'RS256'));
  const ec = pub(raw.ec.kid, raw.ec.pem, 'ES256');
  // RSASSA-PSS with a key of its own issuer (a JWK names one algorithm).
  const ps = pub('ps-0', raw.rsa[1].pem, 'PS256');
  return { rsa, ec, ps, byKid };
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function sign(key, header, claims) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const options = {
    ES256: { key: key.privateKey, dsaEncoding: 'ieee-p1363' },
    // The salt as long as the digest (RFC 7518 §3.5).
    PS256: { key: key.privateKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  }[key.alg] || key.privateKey;
  const sig = crypto.sign('sha256', Buffer.from(input), options);
  return `${input}.${b64url(sig)}`;
}

function accessToken(key, issuer, clientId, ttl, now) {
  return sign(key, { alg: key.alg, typ: 'at+jwt', kid: key.kid }, {
    iss: issuer,
    sub: clientId,
    aud: AUDIENCE,
    exp: now + ttl,
    iat: now,
    scope: SCOPE,
    client_id: clientId,
    jti: crypto.randomBytes(12).toString('base64url'),
  });
}

// ---- mint -----------------------------------------------------------------------------

function mint(opts) {
  const keys = loadKeys(opts.keys);
  const alg = opts.alg || 'RS256';
  const kid = opts.kid || { ES256: keys.ec.kid, PS256: keys.ps.kid }[alg] || keys.rsa[0].kid;
  const key = keys.byKid.get(kid);
  if (!key) die(`no key ${kid}`);
  if (key.alg !== alg) die(`key ${kid} is for ${key.alg}, not ${alg}`);
  if (!opts.issuer) die('--issuer URL is required');
  const count = Number(opts.count || 1);
  if (!Number.isInteger(count) || count < 1) die('--count must be a positive integer');
  if (!opts.out) die('--out FILE is required');
  const clientId = opts['client-id'] || CLIENT_ID;
  const now = Math.floor(Date.now() / 1000);
  const fd = fs.openSync(opts.out, 'w');
  let batch = [];
  for (let i = 0; i < count; i++) {
    batch.push(accessToken(key, opts.issuer, clientId, 7200, now));
    if (batch.length === 1000) { fs.writeSync(fd, batch.join('\n') + '\n'); batch = []; }
  }
  if (batch.length) fs.writeSync(fd, batch.join('\n') + '\n');
  fs.closeSync(fd);
}

// ---- serve ----------------------------------------------------------------------------

function serve(opts) {
  const keys = loadKeys(opts.keys);
  const port = Number(opts.port || 0);
  const stats = { discovery: 0, jwks: 0, jwks_k20: 0, jwks_ps: 0, token: 0, introspection: 0, other: 0 };
  const keysCacheControl = typeof opts['keys-cache-control'] === 'string' ? opts['keys-cache-control'] : null;
  const keysHeaders = keysCacheControl ? { 'cache-control': keysCacheControl } : {};
  const jwks = {
    '': JSON.stringify({ keys: [keys.rsa[0].jwk, keys.ec.jwk] }),
    '/k20': JSON.stringify({ keys: [...keys.rsa.slice(1).map((k) => k.jwk), keys.rsa[0].jwk, keys.ec.jwk] }),
    '/ps': JSON.stringify({ keys: [keys.ps.jwk] }),
  };
  let base = '';

  // Token and introspection answers are no-store (RFC 6749 §5.1); discovery and keys say what
  // --keys-cache-control says (nothing by default).
  const send = (res, status, body, headers = { 'cache-control': 'no-store' }) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(text);
  };
  const basic = (req) => {
    const h = req.headers.authorization || '';
    const m = /^Basic\s+(.+)$/i.exec(h);
    if (!m) return null;
    const raw = m[1].includes(':') ? m[1] : Buffer.from(m[1], 'base64').toString('utf8');
    const i = raw.indexOf(':');
    if (i < 0) return null;
    const dec = (s) => { try { return decodeURIComponent(s.replace(/\+/g, ' ')); } catch { return s; } };
    return [dec(raw.slice(0, i)), dec(raw.slice(i + 1))];
  };
  const unauthorized = (res) => send(res, 401, { error: 'invalid_client' },
    { 'cache-control': 'no-store', 'www-authenticate': 'Basic realm="bench"' });

  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => { size += c.length; if (size <= 65536) chunks.push(c); });
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url, base);
      const p = url.pathname;
      const prefix = ['/k20', '/ps'].find((x) => p.startsWith(`${x}/`)) || '';
      const rest = p.slice(prefix.length);
      if (req.method === 'GET' && rest === '/.well-known/openid-configuration') {
        stats.discovery++;
        return send(res, 200, {
          issuer: base + prefix,
          jwks_uri: `${base}${prefix}/jwks`,
          token_endpoint: `${base}/token`,
          introspection_endpoint: `${base}/token/introspection`,
          grant_types_supported: ['client_credentials'],
          token_endpoint_auth_methods_supported: ['client_secret_basic'],
          id_token_signing_alg_values_supported: ['RS256', 'ES256', 'PS256'],
        }, keysHeaders);
      }
      if (req.method === 'GET' && rest === '/jwks') {
        stats[`jwks${prefix.replace('/', '_')}`]++;
        return send(res, 200, jwks[prefix], { 'content-type': 'application/jwk-set+json', ...keysHeaders });
      }
      if (req.method === 'POST' && p === '/token') {
        stats.token++;
        const who = basic(req);
        if (!who || who[0] !== CLIENT_ID || who[1] !== CLIENT_SECRET) return unauthorized(res);
        const form = new URLSearchParams(body);
        if (form.get('grant_type') !== 'client_credentials') return send(res, 400, { error: 'unsupported_grant_type' });
        const now = Math.floor(Date.now() / 1000);
        return send(res, 200, {
          access_token: accessToken(keys.rsa[0], base, CLIENT_ID, 3600, now),
          token_type: 'Bearer',
          expires_in: 3600,
          scope: SCOPE,
        });
      }
      if (req.method === 'POST' && p === '/token/introspection') {
        stats.introspection++;
        const who = basic(req);
        if (!who || who[0] !== RS_CLIENT_ID || who[1] !== RS_CLIENT_SECRET) return unauthorized(res);
        const token = new URLSearchParams(body).get('token');
        if (token !== OPAQUE_TOKEN) return send(res, 200, { active: false });
        const now = Math.floor(Date.now() / 1000);
        return send(res, 200, {
          active: true, iss: base, aud: AUDIENCE, scope: SCOPE, client_id: CLIENT_ID, sub: CLIENT_ID,
          token_type: 'Bearer', exp: now + 3600, iat: now,
        });
      }
      if (req.method === 'GET' && p === '/__stats') return send(res, 200, stats);
      if (req.method === 'GET' && p === '/__fixtures') {
        // What the benchmark needs to build its configurations and requests.
        return send(res, 200, {
          issuer: base, issuer_k20: `${base}/k20`, issuer_ps: `${base}/ps`, audience: AUDIENCE, scope: SCOPE,
          client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
          rs_client_id: RS_CLIENT_ID, rs_client_secret: RS_CLIENT_SECRET,
          opaque_token: OPAQUE_TOKEN, jwks: JSON.parse(jwks['']), jwks_k20: JSON.parse(jwks['/k20']),
          jwks_ps: JSON.parse(jwks['/ps']),
        });
      }
      stats.other++;
      return send(res, 404, { error: 'not_found' });
    });
  });
  server.keepAliveTimeout = 60000;
  server.listen(port, '127.0.0.1', () => {
    base = `http://127.0.0.1:${server.address().port}`;
    process.stdout.write(`idp listening on ${base}\n`);
  });
  // Envoy keeps its connections open; do not wait for them.
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// ---- main -----------------------------------------------------------------------------

const opts = args(process.argv.slice(2));
switch (opts._[0]) {
  case 'keygen': if (!opts.keys) die('--keys FILE is required'); keygen(opts.keys); break;
  case 'serve': serve(opts); break;
  case 'mint': mint(opts); break;
  default: die('usage: idp.js keygen|serve|mint ... (see the head of this file)');
}
