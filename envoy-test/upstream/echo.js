// Zero-dependency echo upstream for end-to-end tests. Loopback only.
//
//   node echo.js --port PORT
//
// Every request gets 200 application/json:
//   {"method": "...", "path": "...", "headers": {"lower-case-name": "value" | ["v1", "v2"]}}
// "path" is the request target as received (path plus query string).
// Repeated headers are reported as an array, in the order received.
// GET /__upstream/count -> {"count": N}: requests served, not counting the count
// endpoint itself.

'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');

const HOST = '127.0.0.1';

function usage(code) {
  (code ? console.error : console.log)('usage: node echo.js --port PORT   (--port 0 picks a free port)');
  process.exit(code);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  console.error(`upstream: ${err.message}`);
  usage(2);
}
if (values.help) usage(0);
if (values.port === undefined || !/^\d+$/.test(values.port) || Number(values.port) > 65535) {
  console.error(`upstream: --port PORT is required (got ${values.port})`);
  usage(2);
}

let count = 0;

function headersOf(req) {
  const out = Object.create(null);
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    if (!(name in out)) {
      out[name] = value;
    } else if (Array.isArray(out[name])) {
      out[name].push(value);
    } else {
      out[name] = [out[name], value];
    }
  }
  return out;
}

function send(res, body) {
  const data = JSON.stringify(body);
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(data),
  });
  res.end(data);
}

const server = http.createServer((req, res) => {
  // drain any request body, then answer
  req.resume();
  req.on('error', () => {});
  req.on('end', () => {
    const pathname = req.url.split('?', 1)[0];
    if (req.method === 'GET' && pathname === '/__upstream/count') {
      send(res, { count });
      return;
    }
    count += 1;
    send(res, { method: req.method, path: req.url, headers: headersOf(req) });
  });
});

server.keepAliveTimeout = 5_000;

server.on('error', (err) => {
  console.error(`upstream: ${err.message}`);
  process.exit(1);
});

server.listen(Number(values.port), HOST, () => {
  console.log(`upstream listening on http://${HOST}:${server.address().port}`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2_000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
