// OpenID Provider fixture for end-to-end tests. Loopback only, in-memory only.
//
//   node server.js --port PORT [--initial-access-token TOKEN]
//
// See README.md for the endpoints, the test-control API under /__admin/ and
// working curl commands.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// Keep stdout for the single readiness line: oidc-provider prints its NOTICEs
// with console.info, send them to stderr like its WARNINGs.
console.info = (...args) => console.error(...args);

const HOST = '127.0.0.1';
const DEFAULT_RESOURCE = 'https://api.example.com';
const RESOURCE_SCOPE = 'orders:read orders:write';
const DEFAULT_TTL = 600;
const JWKS_MODES = new Set(['normal', 'garbage-html', '500', 'truncated']);

// ---------------------------------------------------------------- arguments

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '3000' },
        'initial-access-token': { type: 'string', default: 'dev-initial-access-token' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    console.error(`idp: ${err.message}`);
    usage(2);
  }
  if (values.help) usage(0);

  const port = Number(values.port);
  if (!/^\d+$/.test(values.port) || !Number.isSafeInteger(port) || port > 65535) {
    console.error(`idp: invalid --port ${values.port}`);
    usage(2);
  }
  const token = values['initial-access-token'];
  if (!token) {
    console.error('idp: --initial-access-token must not be empty');
    usage(2);
  }
  return { port, initialAccessToken: token };
}

function usage(code) {
  (code ? console.error : console.log)(
    'usage: node server.js [--port PORT] [--initial-access-token TOKEN]\n'
    + '  defaults: --port 3000 --initial-access-token dev-initial-access-token\n'
    + '  --port 0 picks a free port; the "idp listening on ..." line has the real one',
  );
  process.exit(code);
}

// ---------------------------------------------------------------- keys

// alg: RS256 or PS256 (an RSA key), ES256 (a P-256 key).
function generateJwk(alg, kid) {
  const { privateKey } = alg === 'ES256'
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid,
    alg,
    use: 'sig',
  };
}

// ---------------------------------------------------------------- adapter

// Map-based adapter shared by every Provider instance this process builds, so
// that registered clients and opaque tokens survive a key rotation (which swaps
// the Provider instance). No size limit (oidc-provider's own memory adapter is
// an LRU of 1000 entries); expired entries are dropped when looked up and by a
// periodic sweep.
const store = new Map(); // key -> { payload, expiresAt (ms, Infinity = never) }
const GRACE_MS = 15_000; // keep expired entries a while, like oidc-provider's clockTolerance

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.value;
}

function storeSet(key, value, expiresIn) {
  const expiresAt = typeof expiresIn === 'number'
    ? Date.now() + expiresIn * 1000 + GRACE_MS
    : Infinity;
  store.set(key, { value, expiresAt });
}

const sweeper = setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) store.delete(key);
  }
}, 60_000);
sweeper.unref();

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session' && payload.uid) {
      storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    }
    if (payload.userCode) {
      storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    }
    if (payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = storeGet(grantKey) ?? [];
      members.push(key);
      storeSet(grantKey, members, expiresIn);
    }
    storeSet(key, structuredClone(payload), expiresIn);
  }

  async find(id) {
    const value = storeGet(this.key(id));
    return value === undefined ? undefined : structuredClone(value);
  }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const value = storeGet(this.key(id));
    if (value) value.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    for (const key of storeGet(grantKey) ?? []) store.delete(key);
    store.delete(grantKey);
  }
}

// ---------------------------------------------------------------- provider

function metadataError(message) {
  return new errors.InvalidClientMetadata(message);
}

// Validates (and defaults) the extra client metadata. Runs at registration and
// every time a stored client is loaded (ctx may then be undefined).
function extraClientMetadataValidator(ctx, key, value, metadata) {
  switch (key) {
    case 'access_token_alg':
      if (value === undefined) {
        metadata[key] = 'RS256';
      } else if (value !== 'RS256' && value !== 'ES256' && value !== 'PS256') {
        throw metadataError('access_token_alg must be "RS256", "ES256" or "PS256"');
      }
      break;
    case 'access_token_ttl':
      if (value === undefined) {
        metadata[key] = DEFAULT_TTL;
      } else if (!Number.isSafeInteger(value) || value < 1) {
        throw metadataError('access_token_ttl must be an integer >= 1 (seconds)');
      }
      break;
    case 'access_token_format':
      if (value === undefined) {
        metadata[key] = 'jwt';
      } else if (value !== 'jwt' && value !== 'opaque') {
        throw metadataError('access_token_format must be "jwt" or "opaque"');
      }
      break;
    default:
      break;
  }
}

function buildProvider(issuer, initialAccessToken, keys) {
  const { rsa, ec, ps } = keys;
  const currentRsaKid = rsa[0].kid;
  const signers = {
    RS256: { alg: 'RS256', kid: currentRsaKid },
    ES256: { alg: 'ES256', kid: ec.kid },
    PS256: { alg: 'PS256', kid: ps.kid },
  };

  const provider = new Provider(issuer, {
    adapter: MapAdapter,
    jwks: { keys: [...rsa, ec, ps].map((k) => ({ ...k })) },
    scopes: ['openid', 'email', 'orders:read', 'orders:write'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
    },
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    },
    extraClientMetadata: {
      properties: ['access_token_alg', 'access_token_ttl', 'access_token_format'],
      validator: extraClientMetadataValidator,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // resource-server pattern: any authenticated client may introspect
        // any token (client authentication already happened at this point).
        allowedPolicy: async () => true,
      },
      revocation: { enabled: true },
      registration: {
        enabled: true,
        initialAccessToken,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf || DEFAULT_RESOURCE,
        useGrantedResource: async () => true,
        // Any absolute http(s) resource indicator is accepted (so a test can get
        // a token with a "wrong" audience via resource=...). The default is
        // https://api.example.com.
        getResourceServerInfo: async (ctx, resourceIndicator, client) => {
          const url = URL.parse(resourceIndicator);
          if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
            throw new errors.InvalidTarget('resource indicator must be an http(s) URL');
          }
          const format = client?.access_token_format ?? 'jwt';
          const alg = client?.access_token_alg ?? 'RS256';
          const info = {
            scope: RESOURCE_SCOPE,
            audience: resourceIndicator,
            accessTokenTTL: client?.access_token_ttl ?? DEFAULT_TTL,
            accessTokenFormat: format,
          };
          if (format === 'jwt') {
            info.jwt = { sign: signers[alg] };
          }
          return info;
        },
      },
    },
    ttl: {
      ClientCredentials: (ctx, token, client) => client?.access_token_ttl
        ?? token.resourceServer?.accessTokenTTL
        ?? DEFAULT_TTL,
    },
  });

  provider.on('server_error', (ctx, err) => {
    console.error(`idp: server_error on ${ctx.method} ${ctx.path}:`, err);
  });

  return provider;
}

// ---------------------------------------------------------------- http server

const { port: requestedPort, initialAccessToken } = parseCli();

const stats = {
  discovery: 0, jwks: 0, token: 0, introspection: 0,
};
let jwksMode = 'normal';
let rsaSerial = 1;
const keys = {
  rsa: [generateJwk('RS256', 'rs-1')], // newest first; at most 2 kept
  ec: generateJwk('ES256', 'es-1'),
  ps: generateJwk('PS256', 'ps-1'),
};
let issuer;
let provider;
let providerHandler;

function countRequest(path) {
  switch (path) {
    case '/.well-known/openid-configuration':
    case '/.well-known/oauth-authorization-server':
      stats.discovery += 1;
      break;
    case '/jwks':
      stats.jwks += 1;
      break;
    case '/token':
      stats.token += 1;
      break;
    case '/token/introspection':
      stats.introspection += 1;
      break;
    default:
      break;
  }
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
  });
  res.end(data);
}

function readBody(req, limit = 64 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function publicJwks() {
  // what the provider publishes in "normal" mode, used for the fault modes
  return {
    keys: [...keys.rsa, keys.ec, keys.ps].map(({
      kty, kid, alg, use, n, e, crv, x, y,
    }) => JSON.parse(JSON.stringify({
      kty, kid, alg, use, n, e, crv, x, y,
    }))),
  };
}

function rotate() {
  rsaSerial += 1;
  const fresh = generateJwk('RS256', `rs-${rsaSerial}`);
  keys.rsa = [fresh, keys.rsa[0]];
  provider = buildProvider(issuer, initialAccessToken, keys);
  providerHandler = provider.callback();
  return fresh.kid;
}

async function handleAdmin(req, res, path) {
  if (path === '/__admin/stats' && req.method === 'GET') {
    sendJson(res, 200, stats);
    return;
  }
  if (path === '/__admin/stats/reset' && req.method === 'POST') {
    await readBody(req);
    for (const k of Object.keys(stats)) stats[k] = 0;
    sendJson(res, 200, stats);
    return;
  }
  if (path === '/__admin/rotate' && req.method === 'POST') {
    await readBody(req);
    const kid = rotate();
    console.error(`idp: rotated signing key, RS256 now signs with ${kid}`);
    sendJson(res, 200, { kid });
    return;
  }
  if (path === '/__admin/jwks-mode' && req.method === 'POST') {
    let mode;
    try {
      ({ mode } = JSON.parse(await readBody(req)));
    } catch {
      sendJson(res, 400, { error: 'body must be JSON {"mode": "..."}' });
      return;
    }
    if (!JWKS_MODES.has(mode)) {
      sendJson(res, 400, { error: `mode must be one of ${[...JWKS_MODES].join(', ')}` });
      return;
    }
    jwksMode = mode;
    sendJson(res, 200, { mode });
    return;
  }
  if (path === '/__admin/jwks-mode' && req.method === 'GET') {
    sendJson(res, 200, { mode: jwksMode });
    return;
  }
  sendJson(res, 404, { error: 'unknown admin endpoint' });
}

function handleFaultyJwks(res) {
  switch (jwksMode) {
    case 'garbage-html': {
      const body = '<!DOCTYPE html><html><head><title>Oops</title></head>'
        + '<body><h1>Service temporarily unavailable</h1><p>not a JWKS</p></body></html>\n';
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    case '500': {
      const body = JSON.stringify({ error: 'server_error', error_description: 'injected jwks failure' });
      res.writeHead(500, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    case 'truncated': {
      const full = JSON.stringify(publicJwks());
      const body = full.slice(0, Math.floor(full.length / 2));
      res.writeHead(200, { 'content-type': 'application/jwk-set+json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    default:
      throw new Error(`unexpected jwks mode ${jwksMode}`);
  }
}

const server = http.createServer((req, res) => {
  let path;
  try {
    path = new URL(req.url, 'http://127.0.0.1').pathname;
  } catch {
    sendJson(res, 400, { error: 'bad request target' });
    return;
  }

  if (path.startsWith('/__admin/')) {
    handleAdmin(req, res, path).catch((err) => {
      console.error('idp: admin error:', err);
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
      else res.destroy();
    });
    return;
  }

  if (!providerHandler) {
    sendJson(res, 503, { error: 'starting' });
    return;
  }

  countRequest(path);

  if (path === '/jwks' && jwksMode !== 'normal') {
    handleFaultyJwks(res);
    return;
  }

  providerHandler(req, res);
});

server.keepAliveTimeout = 5_000;

server.on('error', (err) => {
  console.error(`idp: ${err.message}`);
  process.exit(1);
});

server.listen(requestedPort, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  provider = buildProvider(issuer, initialAccessToken, keys);
  providerHandler = provider.callback();
  console.log(`idp listening on ${issuer}`);
});

function shutdown(signal) {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2_000).unref();
  console.error(`idp: ${signal}, shutting down`);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
