'use strict';
// A scripted ADS client for remora-xds's protocol tests (tests/integration/test_xds_serve.py):
// it speaks the real wire (gRPC over h2c, DiscoveryRequest/DiscoveryResponse from xds/proto via
// @grpc/proto-loader) but sends what a test needs, including what well-behaved clients never
// send. Prints one JSON line per step; the test asserts on them.
//
//   node ads_probe.js --xds HOST:PORT --scenario NAME [--name LISTENER] [--mesh MESH]
//
// Scenarios:
//   sotw    LDS [NAME] -> response; ACK; a stale nonce with other names; a NACK; then CDS
//           wildcard: prints which response came next (CDS proves nothing answered the three
//           before it), then "ready" and waits (up to 20 s) for the next push, printing it.
//   raw     unusual requests over plain HTTP/2, each on its own stream: an unknown method, a
//           content-type that is not gRPC, a length prefix over the size limit, bytes that are
//           no DiscoveryRequest, too many resource names, a message cut short; prints
//           :status / grpc-status of each. Then 20 streams holding partial 4 MiB messages.
//   sidecar as an App Mesh sidecar (--node-id mesh/<m>/virtualNode/<vn>): LDS and CDS
//           wildcard, then RDS --rds and EDS --eds by name (comma lists), each ACKed; prints
//           each response, then "ready", then up to --pushes pushes (each ACKed), waiting up to
//           20 s for each.
const http2 = require('http2');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const o = { xds: null, scenario: null, name: null, mesh: null, 'node-id': 'probe', rds: '',
    eds: '', pushes: '0' };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (!(k in o) || i + 1 >= argv.length) {
      process.stderr.write(`ads_probe.js: bad argument ${argv[i]}\n`);
      process.exit(2);
    }
    o[k] = argv[++i];
  }
  return o;
}

const o = parseArgs(process.argv.slice(2));
const T = 'type.googleapis.com/envoy.config.';
const URL = {
  lds: `${T}listener.v3.Listener`,
  rds: `${T}route.v3.RouteConfiguration`,
  cds: `${T}cluster.v3.Cluster`,
  eds: `${T}endpoint.v3.ClusterLoadAssignment`,
};
const short = Object.fromEntries(Object.entries(URL).map(([k, v]) => [v, k]));

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// Field 1 of every resource type we serve is its name (a string).
function resourceName(buf) {
  if (buf.length < 2 || buf[0] !== 0x0a) {
    return null;
  }
  let len = 0;
  let shift = 0;
  let i = 1;
  for (; i < buf.length; i++) {
    len |= (buf[i] & 0x7f) << shift;
    shift += 7;
    if (!(buf[i] & 0x80)) {
      i++;
      break;
    }
  }
  return buf.slice(i, i + len).toString('utf8');
}

function summary(resp) {
  return {
    type: short[resp.type_url] || resp.type_url,
    version: resp.version_info,
    nonce: resp.nonce,
    names: resp.resources.map((a) => resourceName(a.value)),
    any_types_ok: resp.resources.every((a) => a.type_url === resp.type_url),
  };
}

function adsCall() {
  const def = protoLoader.loadSync(path.join(__dirname, 'proto', 'ads.proto'), {
    includeDirs: [path.join(__dirname, 'proto'), path.join(__dirname, '..', '..', 'xds', 'proto')],
    keepCase: true,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  const Ads = pkg.envoy.service.discovery.v3.AggregatedDiscoveryService;
  const client = new Ads(o.xds, grpc.credentials.createInsecure());
  const call = client.StreamAggregatedResources();
  const queue = [];
  let waiter = null;
  call.on('data', (m) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(m);
    } else {
      queue.push(m);
    }
  });
  call.on('error', (e) => {
    out({ error: e.code, details: e.details });
    process.exit(1);
  });
  const next = (ms) =>
    new Promise((resolve) => {
      if (queue.length) {
        resolve(queue.shift());
        return;
      }
      const t = setTimeout(() => {
        waiter = null;
        resolve(null);
      }, ms);
      waiter = (m) => {
        clearTimeout(t);
        resolve(m);
      };
    });
  const node = { id: o['node-id'], cluster: 'c', locality: { zone: 'z1' } };
  if (o.mesh) {
    node.metadata = { fields: { mesh: { string_value: o.mesh } } };
  }
  return { client, call, next, node };
}

function sidecar() {
  const { client, call, next, node } = adsCall();
  const names = { lds: [], cds: [], rds: o.rds ? o.rds.split(',') : [],
                  eds: o.eds ? o.eds.split(',') : [] };
  const ack = (r) => {
    const t = short[r.type_url];
    call.write({ type_url: r.type_url, version_info: r.version_info, response_nonce: r.nonce,
                 resource_names: names[t] });
  };
  (async () => {
    let first = true;
    for (const t of ['lds', 'cds', 'rds', 'eds']) {
      const req = { type_url: URL[t], resource_names: names[t] };
      if (first) {
        req.node = node;
        first = false;
      }
      call.write(req);
      const r = await next(10000);
      out({ step: t, resp: r && summary(r) });
      if (!r) {
        process.exit(1);
      }
      ack(r);
    }
    out({ step: 'ready' });
    for (let i = 0; i < Number(o.pushes); i++) {
      const r = await next(20000);
      out({ step: 'push', resp: r && summary(r) });
      if (!r) {
        break;
      }
      ack(r);
    }
    call.end();
    client.close();
    process.exit(0);
  })();
}

function sotw() {
  const { client, call, next, node } = adsCall();
  (async () => {
    call.write({ node, type_url: URL.lds, resource_names: [o.name] });
    const r1 = await next(10000);
    out({ step: 'lds', resp: r1 && summary(r1) });
    if (!r1) {
      process.exit(1);
    }
    // ACK: needs no answer.
    call.write({ type_url: URL.lds, version_info: r1.version_info, response_nonce: r1.nonce,
                 resource_names: [o.name] });
    // Stale nonce with another name: ignored.
    call.write({ type_url: URL.lds, version_info: r1.version_info, response_nonce: 'stale',
                 resource_names: [o.name, 'other'] });
    // NACK: answered by nothing.
    call.write({ type_url: URL.lds, version_info: '', response_nonce: r1.nonce,
                 resource_names: [o.name], error_detail: { code: 3, message: 'probe says no' } });
    // Sentinel: CDS wildcard.
    call.write({ type_url: URL.cds, resource_names: [] });
    const r2 = await next(10000);
    out({ step: 'after_nack', resp: r2 && summary(r2) });
    call.write({ type_url: URL.cds, version_info: r2.version_info, response_nonce: r2.nonce,
                 resource_names: [] });
    out({ step: 'ready' });
    const r3 = await next(20000);
    out({ step: 'push', resp: r3 && summary(r3) });
    call.end();
    client.close();
    process.exit(0);
  })();
}

function prefix(len) {
  const b = Buffer.alloc(5);
  b.writeUInt32BE(len, 1);
  return b;
}

function rawRequest(session, p, contentType, body) {
  return new Promise((resolve) => {
    const res = { status: null, grpc_status: null, grpc_message: null };
    const req = session.request({
      ':method': 'POST',
      ':path': p,
      'content-type': contentType,
      te: 'trailers',
    });
    req.on('response', (h) => {
      res.status = h[':status'];
      if (h['grpc-status'] !== undefined) {
        res.grpc_status = Number(h['grpc-status']);
        res.grpc_message = h['grpc-message'] || null;
      }
    });
    req.on('trailers', (h) => {
      res.grpc_status = Number(h['grpc-status']);
      res.grpc_message = h['grpc-message'] || null;
    });
    req.on('data', () => {});
    req.on('error', (e) => {
      res.error = e.code;
    });
    req.on('close', () => resolve(res));
    req.end(body);
  });
}

function namesMessage(n) {
  // DiscoveryRequest{resource_names: n x "n"}, type_url LDS: built by hand.
  const parts = [];
  const url = Buffer.from(URL.lds);
  parts.push(Buffer.from([0x22, url.length]), url);
  for (let i = 0; i < n; i++) {
    parts.push(Buffer.from([0x1a, 1, 0x6e]));
  }
  const msg = Buffer.concat(parts);
  return Buffer.concat([prefix(msg.length), msg]);
}

async function raw() {
  const session = http2.connect(`http://${o.xds}`);
  session.on('error', () => {});
  const ads = '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources';
  out({ step: 'unknown_method',
        res: await rawRequest(session, '/envoy.service.discovery.v3.AggregatedDiscoveryService/' +
                              'DeltaAggregatedResources', 'application/grpc', Buffer.alloc(0)) });
  out({ step: 'content_type',
        res: await rawRequest(session, ads, 'application/json', Buffer.from('{}')) });
  out({ step: 'oversize',
        res: await rawRequest(session, ads, 'application/grpc', prefix(0x7fffffff)) });
  out({ step: 'undecodable',
        res: await rawRequest(session, ads, 'application/grpc',
                              Buffer.concat([prefix(3), Buffer.from([0xff, 0xff, 0xff])])) });
  out({ step: 'too_many_names',
        res: await rawRequest(session, ads, 'application/grpc', namesMessage(10001)) });
  out({ step: 'cut_short',
        res: await rawRequest(session, ads, 'application/grpc',
                              Buffer.concat([prefix(100), Buffer.from('abc')])) });
  session.close();
  // Many streams each announcing a 4 MiB message and sending nothing more: the server holds
  // at most 64 MiB of partial requests in all, so of 20 such streams (two connections, ten
  // each) the last four fail with RESOURCE_EXHAUSTED.
  const sessions = [http2.connect(`http://${o.xds}`), http2.connect(`http://${o.xds}`)];
  let failed = 0;
  const messages = [];
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 20000);
    for (let i = 0; i < 20; i++) {
      const s = sessions[i % 2];
      s.on('error', () => {});
      const req = s.request({ ':method': 'POST', ':path': ads, 'content-type': 'application/grpc',
                              te: 'trailers' });
      const onStatus = (h) => {
        if (h['grpc-status'] !== undefined && Number(h['grpc-status']) !== 0) {
          failed += 1;
          messages.push(h['grpc-message']);
          if (failed >= 4) {
            clearTimeout(timer);
            resolve();
          }
        }
      };
      req.on('response', onStatus);
      req.on('trailers', onStatus);
      req.on('data', () => {});
      req.on('error', () => {});
      req.write(prefix(4 * 1024 * 1024));
    }
  });
  out({ step: 'partial_flood', res: { failed, messages } });
  for (const s of sessions) {
    s.destroy();
  }
}

if (o.scenario === 'sotw') {
  sotw();
} else if (o.scenario === 'raw') {
  raw().then(() => process.exit(0));
} else if (o.scenario === 'sidecar') {
  sidecar();
} else {
  process.stderr.write('ads_probe.js: --scenario sotw|raw|sidecar\n');
  process.exit(2);
}
