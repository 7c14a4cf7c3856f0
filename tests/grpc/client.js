'use strict';
// Makes one gRPC call to test.Echo and prints one JSON line (tests/integration/grpcutil.py):
//
//   node client.js --target HOST:PORT [--kind unary|server|client|bidi] [--metadata K=V]...
//                  [--deadline-ms N] [--message JSON]... [--authority NAME]
//
// --message gives the request (unary, server) or each streamed request message (client,
// bidi; in order). Output:
//   {"code": N, "code_name": "OK", "details": "...", "messages": [...],
//    "headers": {...}, "trailers": {...}, "elapsed_ms": N}
// headers: the initial metadata; trailers: the status's metadata (with grpc-status and
// grpc-message removed by grpc-js). Exit status 0 whenever a status was received (whatever its
// code), 2 on bad arguments. grpc-js's own retries are off, so one call is one attempt.
const grpc = require('@grpc/grpc-js');
const { ECHO_SERVICE, KINDS } = require('./service');

function usage(msg) {
  process.stderr.write(`client.js: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { target: null, kind: 'unary', metadata: [], deadlineMs: null, messages: [],
              authority: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) {
        usage(`${a} needs a value`);
      }
      return argv[++i];
    };
    switch (a) {
      case '--target':
        o.target = next();
        break;
      case '--kind':
        o.kind = next();
        break;
      case '--metadata': {
        const kv = next();
        const eq = kv.indexOf('=');
        if (eq <= 0) {
          usage(`--metadata wants K=V, got ${kv}`);
        }
        o.metadata.push([kv.slice(0, eq), kv.slice(eq + 1)]);
        break;
      }
      case '--deadline-ms':
        o.deadlineMs = Number.parseInt(next(), 10);
        if (!Number.isFinite(o.deadlineMs)) {
          usage('--deadline-ms wants a number');
        }
        break;
      case '--message':
        try {
          o.messages.push(JSON.parse(next()));
        } catch (e) {
          usage(`--message: ${e.message}`);
        }
        break;
      case '--authority':
        o.authority = next();
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (!o.target) {
    usage('--target is required');
  }
  if (!KINDS[o.kind]) {
    usage(`--kind must be one of ${Object.keys(KINDS).join(', ')}`);
  }
  return o;
}

const o = parseArgs(process.argv.slice(2));
const channelOptions = {
  'grpc.enable_retries': 0,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
  'grpc.max_send_message_length': 64 * 1024 * 1024,
};
if (o.authority) {
  channelOptions['grpc.default_authority'] = o.authority;
}
const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
const client = new Client(o.target, grpc.credentials.createInsecure(), channelOptions);
const md = new grpc.Metadata();
for (const [k, v] of o.metadata) {
  md.add(k.toLowerCase(), v);
}
const callOpts = {};
if (o.deadlineMs !== null) {
  callOpts.deadline = new Date(Date.now() + o.deadlineMs);
}

const codeNames = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));
const t0 = process.hrtime.bigint();
const result = { code: null, code_name: null, details: null, messages: [], headers: {},
                 trailers: {}, elapsed_ms: null };
let printed = false;

function mdObject(m) {
  const out = {};
  for (const [k, v] of Object.entries(m.getMap())) {
    out[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
  }
  return out;
}

function finish(status) {
  if (printed) {
    return;
  }
  printed = true;
  result.code = status.code;
  result.code_name = codeNames[status.code] || String(status.code);
  result.details = status.details;
  result.trailers = status.metadata ? mdObject(status.metadata) : {};
  result.elapsed_ms = Number(process.hrtime.bigint() - t0) / 1e6;
  client.close();
  // Leave once stdout (a pipe: written asynchronously) has taken the line, even if the
  // channel still holds a timer.
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

const method = KINDS[o.kind];
let call;
if (o.kind === 'unary' || o.kind === 'client') {
  const cb = (err, resp) => {
    if (!err && resp !== undefined) {
      result.messages.push(resp);
    }
  };
  if (o.kind === 'unary') {
    call = client[method](o.messages[0] || {}, md, callOpts, cb);
  } else {
    call = client[method](md, callOpts, cb);
  }
} else if (o.kind === 'server') {
  call = client[method](o.messages[0] || {}, md, callOpts);
} else {
  call = client[method](md, callOpts);
}
call.on('metadata', (m) => {
  result.headers = mdObject(m);
});
if (o.kind === 'server' || o.kind === 'bidi') {
  call.on('data', (m) => result.messages.push(m));
  call.on('error', () => {}); // the status event carries it
}
// The callback (unary/client) runs before 'status'; the response is in by then.
call.on('status', (st) => setImmediate(() => finish(st)));
if (o.kind === 'client' || o.kind === 'bidi') {
  for (const m of o.messages) {
    call.write(m);
  }
  call.end();
}
