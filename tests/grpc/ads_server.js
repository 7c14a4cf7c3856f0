'use strict';
// ADS test server for remora's xDS client tests (tests/integration/adsutil.py, test_ads.py).
//
//   node ads_server.js [--host 127.0.0.1] [--port N] [--port-file PATH]
//
// Serves envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources (state
// of the world) with @grpc/grpc-js, loading the repo's own protos (xds/proto: ads.proto and the
// resource types) with @grpc/proto-loader and protobufjs. Listens for plaintext HTTP/2 on
// HOST:PORT (default 0) and for HTTP/1.1 controls on HOST:0, then writes one line
// {"port": P, "ctl_port": Q} to stdout and, with --port-file, to PATH (temporary file + rename).
//
// Behaviour: every DiscoveryRequest is recorded. A request whose response_nonce is not the last
// nonce this stream sent for its type is stale and gets no answer (xds-wire.md §7); so does an
// ACK or NACK (a non-empty, current nonce) unless its resource names changed. Any other request
// (a first one, empty nonce) is answered with the type's current state, if the test set one.
// Every response gets a fresh nonce ("1", "2", ... for the process).
//
// Controls (JSON bodies):
//   GET  /requests  -> {"requests": [{"stream": S, "seq": N, ...DiscoveryRequest as JSON}],
//                       "streams": streams opened so far, "active": streams open now}
//   POST /set {"type_url", "version", "resources": [R...], "push": true}
//        sets the type's state; with push (the default) sends it now on every open stream that
//        has asked for the type. R is {"json": {...resource}} (encoded as the type_url's message),
//        {"type_url": T, "json": {...}} (another type: a mismatched Any), {"type_url": T,
//        "b64": "..."} (raw bytes), or {"garbage_bytes": N} (N bytes of 0xff: does not decode).
//   POST /drop      -> ends every open stream (status OK): clients reconnect.
//   POST /quit      -> exits.
// SIGTERM/SIGINT: exit 0.
const fs = require('fs');
const http = require('http');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_DIR = path.join(__dirname, '..', '..', 'xds', 'proto');
const PREFIX = 'type.googleapis.com/';

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 0, portFile: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) {
        throw new Error(`${a} needs a value`);
      }
      return argv[++i];
    };
    if (a === '--host') {
      opts.host = next();
    } else if (a === '--port') {
      opts.port = parseInt(next(), 10);
    } else if (a === '--port-file') {
      opts.portFile = next();
    } else {
      throw new Error(`unknown argument ${a}`);
    }
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// Resource types, for encoding what the tests give as JSON.
const root = new protobuf.Root();
root.resolvePath = (origin, target) => path.join(PROTO_DIR, target);
root.loadSync([
  'envoy/config/route/v3/route.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  // what Listener resources carry in their Any fields (test_lds.py)
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  // RBAC filters in Listener resources (test_rbac.py)
  'envoy/extensions/filters/http/rbac/v3/rbac.proto',
  'envoy/extensions/filters/network/rbac/v3/rbac.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  // transport sockets of Listeners and Clusters (test_sds_dynamic.py)
  'envoy/extensions/transport_sockets/tls/v3/tls.proto',
], { keepCase: true });

// Proto3 JSON forms protobufjs's verify does not take: wrappers as bare scalars (weight: 90),
// durations as strings ("1.5s") and enums by name ("STATIC").
const WRAPPERS = new Set(['DoubleValue', 'FloatValue', 'Int64Value', 'UInt64Value', 'Int32Value',
  'UInt32Value', 'BoolValue', 'StringValue', 'BytesValue'].map((n) => `.google.protobuf.${n}`));

function normalize(T, obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return obj;
  }
  const out = {};
  for (const [k, v] of Object.entries(obj)) {
    const f = T.fields[k];
    const R = f && f.resolve().resolvedType;
    if (R instanceof protobuf.Enum) {
      // enum names ("STATIC", "V3"), as proto3 JSON writes them
      const e = (x) => (typeof x === 'string' && x in R.values ? R.values[x] : x);
      out[k] = f.repeated && Array.isArray(v) ? v.map(e) : e(v);
      continue;
    }
    if (!R || !(R instanceof protobuf.Type)) {
      out[k] = v;
      continue;
    }
    const one = (x) => {
      if (WRAPPERS.has(R.fullName) && (x === null || typeof x !== 'object')) {
        return { value: x };
      }
      if (R.fullName === '.google.protobuf.Duration' && typeof x === 'string') {
        const secs = parseFloat(x);
        return { seconds: Math.trunc(secs), nanos: Math.round((secs % 1) * 1e9) };
      }
      if (R.fullName === '.google.protobuf.Any') {
        return x;
      }
      return normalize(R, x);
    };
    if (f.map) {
      out[k] = Object.fromEntries(Object.entries(v).map(([mk, mv]) => [mk, one(mv)]));
    } else if (f.repeated && Array.isArray(v)) {
      out[k] = v.map(one);
    } else {
      out[k] = one(v);
    }
  }
  return out;
}

function encodeAs(typeUrl, raw) {
  const T = root.lookupType(typeUrl.slice(PREFIX.length));
  const obj = normalize(T, raw);
  const err = T.verify(obj);
  if (err) {
    throw new Error(`${typeUrl}: ${err}`);
  }
  return Buffer.from(T.encode(T.fromObject(obj)).finish());
}

const def = protoLoader.loadSync('envoy/service/discovery/v3/ads.proto', {
  keepCase: true, longs: String, enums: String, defaults: false, oneofs: true,
  includeDirs: [PROTO_DIR],
});
const ads = grpc.loadPackageDefinition(def).envoy.service.discovery.v3;

const requests = [];
const state = new Map(); // type_url -> {version, resources: [{type_url, value}]}
const streams = new Set();
let nStreams = 0;
let nonceSeq = 0;

function send(st, typeUrl) {
  const s = state.get(typeUrl);
  if (!s) {
    return;
  }
  const nonce = String(++nonceSeq);
  st.lastNonce.set(typeUrl, nonce);
  st.call.write({ version_info: s.version, resources: s.resources, type_url: typeUrl, nonce });
}

function sameNames(a, b) {
  const x = [...(a || [])].sort();
  const y = [...(b || [])].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function streamAds(call) {
  const st = { id: ++nStreams, call, lastNonce: new Map(), names: new Map() };
  streams.add(st);
  let seq = 0;
  call.on('data', (req) => {
    const rec = Object.assign({ stream: st.id, seq: seq++ }, req);
    requests.push(rec);
    const t = req.type_url || '';
    const nonce = req.response_nonce || '';
    const prevNames = st.names.get(t);
    st.names.set(t, req.resource_names || []);
    if (nonce !== '' && nonce !== st.lastNonce.get(t)) {
      return; // stale
    }
    if (nonce !== '' && sameNames(prevNames, req.resource_names)) {
      return; // an ACK or NACK of the newest response
    }
    send(st, t);
  });
  const done = () => {
    streams.delete(st);
  };
  call.on('end', () => {
    done();
    call.end();
  });
  call.on('error', done);
  call.on('close', done);
}

function resourceOf(typeUrl, r) {
  if (r.garbage_bytes !== undefined) {
    return { type_url: typeUrl, value: Buffer.alloc(r.garbage_bytes, 0xff) };
  }
  const t = r.type_url || typeUrl;
  if (r.b64 !== undefined) {
    return { type_url: t, value: Buffer.from(r.b64, 'base64') };
  }
  return { type_url: t, value: encodeAs(t, r.json) };
}

function control(req, res, body) {
  const reply = (code, obj) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };
  try {
    if (req.method === 'GET' && req.url === '/requests') {
      return reply(200, { requests, streams: nStreams, active: streams.size });
    }
    if (req.method === 'POST' && req.url === '/set') {
      const b = JSON.parse(body);
      const resources = (b.resources || []).map((r) => resourceOf(b.type_url, r));
      state.set(b.type_url, { version: b.version || '', resources });
      let pushed = 0;
      if (b.push !== false) {
        for (const st of streams) {
          if (st.names.has(b.type_url)) {
            send(st, b.type_url);
            pushed++;
          }
        }
      }
      return reply(200, { pushed, nonce: String(nonceSeq) });
    }
    if (req.method === 'POST' && req.url === '/drop') {
      const n = streams.size;
      for (const st of [...streams]) {
        streams.delete(st);
        st.call.end();
      }
      return reply(200, { dropped: n });
    }
    if (req.method === 'POST' && req.url === '/quit') {
      reply(200, {});
      setImmediate(() => process.exit(0));
      return undefined;
    }
    return reply(404, { error: 'no such control' });
  } catch (e) {
    return reply(400, { error: String(e && e.message ? e.message : e) });
  }
}

const server = new grpc.Server();
server.addService(ads.AggregatedDiscoveryService.service, {
  StreamAggregatedResources: streamAds,
});

const ctl = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => control(req, res, Buffer.concat(chunks).toString()));
});

function announce(port, ctlPort) {
  const line = JSON.stringify({ port, ctl_port: ctlPort }) + '\n';
  process.stdout.write(line);
  if (opts.portFile) {
    const tmp = `${opts.portFile}.tmp`;
    fs.writeFileSync(tmp, line);
    fs.renameSync(tmp, opts.portFile);
  }
}

server.bindAsync(`${opts.host}:${opts.port}`, grpc.ServerCredentials.createInsecure(),
  (err, port) => {
    if (err) {
      process.stderr.write(`ads_server: bind: ${err.message}\n`);
      process.exit(1);
    }
    ctl.listen(0, opts.host, () => announce(port, ctl.address().port));
  });

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
