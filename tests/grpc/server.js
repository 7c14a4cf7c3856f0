'use strict';
// gRPC test server for remora's integration tests (tests/integration/grpcutil.py).
//
//   node server.js [--host 127.0.0.1] [--port-file PATH] [--name NAME]
//
// Listens for plaintext HTTP/2 gRPC on HOST:0 and for HTTP/1.1 stats on HOST:0, then prints
// one line {"port": P, "stats_port": Q} to stdout and, with --port-file, writes the same line to
// PATH (via a temporary file and a rename). SIGTERM/SIGINT: exit 0.
//
// Service test.Echo (messages are JSON objects; see service.js):
//   Unary(req)            -> {"text": req.text, "name", "method", "metadata": {...},
//                             "deadline_ms": ms left or null, "pad": "x"*size}
//   ServerStream({n})     -> n messages {"seq": i, "text": req.text, "pad"}
//   ClientStream(msgs)    -> {"sum": sum of msgs[].value, "count": number of messages}
//   BidiStream(msgs)      -> one {"seq": i, "echo": msg, "pad"} per message; ends when the
//                            client ends
// Controls, by request metadata:
//   x-fail-code: N        answer with status N (no response message)
//   x-fail-message: TEXT  its grpc-message (default "failed by x-fail-code")
//   x-fail-first: N       with x-attempt-key: KEY: the first N calls carrying KEY fail (with
//                         x-fail-code, default 14 UNAVAILABLE), later ones succeed
//   x-fail-after: K       streams: fail (x-fail-code) after K response messages
//   x-delay-ms: N         wait N ms before answering (before the first stream message)
//   x-interval-ms: N      streams: wait N ms between messages
//   x-response-size: N    every response message carries a "pad" of N bytes
//   x-send-header: K=V    initial (header) metadata K: V (repeatable, or K=V,K2=V2)
//   x-send-trailer: K=V   trailing metadata K: V, on success and on failure (likewise)
// The status always carries trailing metadata "x-server-name: NAME".
//
// Service grpc.health.v1.Health (grpc/doc/health-checking.md; real protobuf, encoded by hand in
// health.js): Check({service}) answers {status} from a table that starts as {"": SERVING};
// a service not in it gets NOT_FOUND, as grpc's own health server answers. The controls above
// apply to Check too (x-fail-code, x-delay-ms, ...). Watch is not implemented.
//   POST /health?service=S&status=NAME   sets S's status (SERVING, NOT_SERVING, UNKNOWN,
//                                        SERVICE_UNKNOWN; S may be empty); status=remove drops S
//
// Stats: GET /stats on stats_port -> {"calls": N, "by_method": {...}, "attempts": {KEY: N},
//   "last_metadata": {...}, "health_services": [service of each Check, last 100]};
//   POST /reset zeroes them.
const fs = require('fs');
const http = require('http');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const { ECHO_SERVICE } = require('./service');
const { HEALTH_SERVICE, SERVING_STATUS } = require('./health');

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', portFile: null, name: 'grpc' };
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
    } else if (a === '--port-file') {
      opts.portFile = next();
    } else if (a === '--name') {
      opts.name = next();
    } else {
      throw new Error(`unknown argument ${a}`);
    }
  }
  return opts;
}

const opts = (() => {
  try {
    return parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`server.js: ${e.message}\n`);
    process.exit(2);
  }
})();

const stats = { calls: 0, by_method: {}, attempts: {}, last_metadata: {}, health_services: [] };
const healthTable = new Map([['', SERVING_STATUS.SERVING]]);

function first(md, key) {
  const v = md.get(key);
  return v.length ? String(v[0]) : null;
}

function intOf(md, key, dflt) {
  const v = first(md, key);
  if (v === null) {
    return dflt;
  }
  const n = Number.parseInt(v, 10);
  return Number.isFinite(n) ? n : dflt;
}

function pairs(md, key) {
  const out = new grpc.Metadata();
  // A repeated header arrives joined with ", " (Node's http2), so split on commas too.
  for (const v of md.get(key)) {
    for (const s of String(v).split(',')) {
      const eq = s.indexOf('=');
      if (eq > 0) {
        out.add(s.slice(0, eq).trim().toLowerCase(), s.slice(eq + 1).trim());
      }
    }
  }
  return out;
}

function mdObject(md) {
  const out = {};
  for (const [k, v] of Object.entries(md.getMap())) {
    out[k] = Buffer.isBuffer(v) ? v.toString('base64') : v;
  }
  return out;
}

// What one call was asked to do, read from its metadata; counts the call.
function plan(call, methodName) {
  const md = call.metadata;
  stats.calls += 1;
  stats.by_method[methodName] = (stats.by_method[methodName] || 0) + 1;
  stats.last_metadata = mdObject(md);
  const p = {
    failCode: intOf(md, 'x-fail-code', null),
    failMessage: first(md, 'x-fail-message'),
    failAfter: intOf(md, 'x-fail-after', null),
    delayMs: intOf(md, 'x-delay-ms', 0),
    intervalMs: intOf(md, 'x-interval-ms', 0),
    size: intOf(md, 'x-response-size', 0),
    headers: pairs(md, 'x-send-header'),
    trailers: pairs(md, 'x-send-trailer'),
  };
  p.trailers.set('x-server-name', opts.name);
  const key = first(md, 'x-attempt-key');
  if (key !== null) {
    const n = (stats.attempts[key] || 0) + 1;
    stats.attempts[key] = n;
    const failFirst = intOf(md, 'x-fail-first', 0);
    if (n > failFirst) {
      p.failCode = null; // this attempt succeeds
    } else if (p.failCode === null) {
      p.failCode = grpc.status.UNAVAILABLE;
    }
  }
  return p;
}

function failure(p) {
  return {
    code: p.failCode,
    details: p.failMessage !== null ? p.failMessage : 'failed by x-fail-code',
    metadata: p.trailers,
  };
}

function pad(p) {
  return p.size > 0 ? 'x'.repeat(p.size) : undefined;
}

function deadlineLeft(call) {
  const d = call.getDeadline();
  if (d === Infinity || d === undefined || d === null) {
    return null;
  }
  const t = d instanceof Date ? d.getTime() : Number(d);
  return Number.isFinite(t) ? Math.max(0, t - Date.now()) : null;
}

function later(ms, fn) {
  if (ms > 0) {
    setTimeout(fn, ms);
  } else {
    fn();
  }
}

function sendHeaders(call, p) {
  if (Object.keys(p.headers.getMap()).length > 0) {
    call.sendMetadata(p.headers);
  }
}

const impl = {
  Unary(call, callback) {
    const p = plan(call, 'Unary');
    later(p.delayMs, () => {
      if (call.cancelled) {
        return;
      }
      sendHeaders(call, p);
      if (p.failCode !== null) {
        callback(failure(p));
        return;
      }
      callback(
        null,
        {
          text: call.request.text,
          name: opts.name,
          method: 'Unary',
          metadata: mdObject(call.metadata),
          deadline_ms: deadlineLeft(call),
          pad: pad(p),
        },
        p.trailers,
      );
    });
  },

  ServerStream(call) {
    const p = plan(call, 'ServerStream');
    const n = Number.isInteger(call.request.n) ? Math.min(call.request.n, 100000) : 1;
    let seq = 0;
    const step = () => {
      if (call.cancelled) {
        return;
      }
      if (p.failCode !== null && (p.failAfter === null || seq >= p.failAfter)) {
        call.emit('error', failure(p));
        return;
      }
      if (seq >= n) {
        call.end(p.trailers);
        return;
      }
      call.write({ seq, text: call.request.text, pad: pad(p) });
      seq += 1;
      later(p.intervalMs, step);
    };
    later(p.delayMs, () => {
      sendHeaders(call, p);
      step();
    });
  },

  ClientStream(call, callback) {
    const p = plan(call, 'ClientStream');
    let sum = 0;
    let count = 0;
    call.on('data', (m) => {
      count += 1;
      sum += typeof m.value === 'number' ? m.value : 0;
    });
    call.on('end', () => {
      later(p.delayMs, () => {
        if (call.cancelled) {
          return;
        }
        sendHeaders(call, p);
        if (p.failCode !== null) {
          callback(failure(p));
          return;
        }
        callback(null, { sum, count, pad: pad(p) }, p.trailers);
      });
    });
  },

  BidiStream(call) {
    const p = plan(call, 'BidiStream');
    let seq = 0;
    let started = false;
    let failed = false;
    const start = (fn) => {
      if (started) {
        fn();
        return;
      }
      started = true;
      later(p.delayMs, () => {
        sendHeaders(call, p);
        fn();
      });
    };
    const failNow = () => {
      if (!failed) {
        failed = true;
        call.emit('error', failure(p));
      }
    };
    if (p.failCode !== null && (p.failAfter === null || p.failAfter === 0)) {
      start(failNow);
      return;
    }
    call.on('data', (m) => {
      start(() => {
        if (failed || call.cancelled) {
          return;
        }
        call.write({ seq, echo: m, pad: pad(p) });
        seq += 1;
        if (p.failCode !== null && seq >= p.failAfter) {
          failNow();
        }
      });
    });
    call.on('end', () => {
      start(() => {
        if (!failed && !call.cancelled) {
          call.end(p.trailers);
        }
      });
    });
  },
};

const healthImpl = {
  Check(call, callback) {
    const p = plan(call, 'Check');
    const service = call.request.service;
    stats.health_services.push(service);
    if (stats.health_services.length > 100) {
      stats.health_services.shift();
    }
    later(p.delayMs, () => {
      if (p.failCode !== null) {
        callback(failure(p));
      } else if (!healthTable.has(service)) {
        callback({ code: grpc.status.NOT_FOUND, details: 'unknown service', metadata: p.trailers });
      } else {
        callback(null, { status: healthTable.get(service) }, p.trailers);
      }
    });
  },
};

// POST /health?service=S&status=NAME; answers the table as JSON, or 400.
function setHealth(url) {
  const q = new URL(url, 'http://x').searchParams;
  const service = q.get('service') || '';
  const status = q.get('status');
  if (status === 'remove') {
    healthTable.delete(service);
  } else if (status !== null && Object.prototype.hasOwnProperty.call(SERVING_STATUS, status)) {
    healthTable.set(service, SERVING_STATUS[status]);
  } else {
    return null;
  }
  return Object.fromEntries(healthTable);
}

function statsServer(cb) {
  const srv = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url.startsWith('/health')) {
      const table = setHealth(req.url);
      const body = JSON.stringify(table === null ? { error: 'bad status' } : table) + '\n';
      res.writeHead(table === null ? 400 : 200, { 'content-type': 'application/json' });
      res.end(body);
      return;
    }
    if (req.method === 'POST' && req.url === '/reset') {
      stats.calls = 0;
      stats.by_method = {};
      stats.attempts = {};
      stats.last_metadata = {};
      stats.health_services = [];
    } else if (!(req.method === 'GET' && req.url === '/stats')) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('GET /stats, POST /reset or POST /health?service=S&status=NAME\n');
      return;
    }
    const body = JSON.stringify(stats) + '\n';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
  srv.listen(0, opts.host, () => cb(srv));
  return srv;
}

function writePortFile(file, line) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, line);
  fs.renameSync(tmp, file);
}

const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
server.addService(ECHO_SERVICE, impl);
server.addService(HEALTH_SERVICE, healthImpl);
server.bindAsync(`${opts.host}:0`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`server.js: bind: ${err.message}\n`);
    process.exit(1);
  }
  statsServer((hs) => {
    const line = JSON.stringify({ port, stats_port: hs.address().port }) + '\n';
    process.stdout.write(line);
    if (opts.portFile) {
      writePortFile(opts.portFile, line);
    }
    const stop = () => {
      hs.close();
      server.forceShutdown();
      process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
});
