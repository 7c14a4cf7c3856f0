'use strict';
// A real proxyless xDS gRPC client (@grpc/grpc-js-xds) for remora-xds's tests
// (tests/integration/test_xds_serve.py). It keeps ONE channel to `xds:///TARGET` for its whole
// life, so a test can change the mesh and watch the same channel follow remora-xds's pushes.
//
//   node xds_client.js --xds HOST:PORT --target NAME [--node-id ID] [--mesh MESH]
//
// The bootstrap goes through GRPC_XDS_BOOTSTRAP_CONFIG (set here, before grpc-js-xds loads):
// one insecure xds server, node {id, cluster, locality {zone: "z1"}, metadata {mesh}} (grpc-js
// throws without a locality). Then it reads commands from stdin, one JSON object per line:
//   {"calls": N, "deadline_ms": D, "metadata": {K: V}, "attempt_key": "P"}
// makes N unary test.Echo/Unary calls one after another (with "attempt_key", call i carries
// x-attempt-key: P-i: see server.js's x-fail-first) and prints one JSON line:
//   {"by": {"<server name>": n, "error:<code>": n}, "details": [first error details...]}
// EOF on stdin: exit 0.
const readline = require('readline');

function parseArgs(argv) {
  const o = { xds: null, target: null, nodeId: 'remora-test-client', mesh: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) {
        process.stderr.write(`xds_client.js: ${a} needs a value\n`);
        process.exit(2);
      }
      return argv[++i];
    };
    if (a === '--xds') {
      o.xds = next();
    } else if (a === '--target') {
      o.target = next();
    } else if (a === '--node-id') {
      o.nodeId = next();
    } else if (a === '--mesh') {
      o.mesh = next();
    } else {
      process.stderr.write(`xds_client.js: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  if (!o.xds || !o.target) {
    process.stderr.write('xds_client.js: --xds and --target are required\n');
    process.exit(2);
  }
  return o;
}

const o = parseArgs(process.argv.slice(2));
const node = { id: o.nodeId, cluster: 'remora-tests', locality: { zone: 'z1' }, metadata: {} };
if (o.mesh) {
  node.metadata.mesh = o.mesh;
}
process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
  xds_servers: [{ server_uri: o.xds, channel_creds: [{ type: 'insecure' }], server_features: [] }],
  node,
});

const grpc = require('@grpc/grpc-js');
require('@grpc/grpc-js-xds').register();
const { ECHO_SERVICE } = require('./service');

const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
const client = new Client(`xds:///${o.target}`, grpc.credentials.createInsecure());

function oneCall(cmd, i) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(cmd.metadata || {})) {
      md.add(k.toLowerCase(), String(v));
    }
    if (cmd.attempt_key) {
      md.set('x-attempt-key', `${cmd.attempt_key}-${i}`);
    }
    const deadline = new Date(Date.now() + (cmd.deadline_ms || 5000));
    client.Unary({ text: `call ${i}` }, md, { deadline }, (err, resp) => {
      if (err) {
        resolve({ key: `error:${err.code}`, details: err.details });
      } else {
        resolve({ key: resp.name, details: null });
      }
    });
  });
}

async function run(cmd) {
  const out = { by: {}, details: [] };
  for (let i = 0; i < (cmd.calls || 1); i++) {
    const r = await oneCall(cmd, i);
    out.by[r.key] = (out.by[r.key] || 0) + 1;
    if (r.details !== null && out.details.length < 3) {
      out.details.push(r.details);
    }
  }
  return out;
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', (line) => {
  if (!line.trim()) {
    return;
  }
  chain = chain.then(async () => {
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (e) {
      process.stdout.write(JSON.stringify({ error: e.message }) + '\n');
      return;
    }
    process.stdout.write(JSON.stringify(await run(cmd)) + '\n');
  });
});
rl.on('close', () => {
  chain.then(() => {
    client.close();
    process.exit(0);
  });
});
