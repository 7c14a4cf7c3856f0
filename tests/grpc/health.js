'use strict';
// grpc.health.v1.Health for server.js (grpc/src/proto/grpc/health/v1/health.proto), with the
// two one-field messages encoded by hand as real protobuf, so no .proto or proto-loader is
// needed:
//   HealthCheckRequest  { string service = 1; }         tag 0x0a, varint length, UTF-8 bytes
//   HealthCheckResponse { ServingStatus status = 1; }    tag 0x08, varint value (0 is left out)

const SERVING_STATUS = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 };

function varint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

// Reads fields of `buf`; calls fn(field, wireType, value) for varint (number) and
// length-delimited (Buffer) fields, skips 32- and 64-bit ones, throws on anything malformed.
function walk(buf, fn) {
  let off = 0;
  const readVarint = () => {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (off >= buf.length) {
        throw new Error('truncated varint');
      }
      const b = buf[off++];
      v += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) {
        return v;
      }
    }
    throw new Error('varint too long');
  };
  while (off < buf.length) {
    const key = readVarint();
    const field = Math.floor(key / 8);
    const wt = key & 7;
    if (wt === 0) {
      fn(field, wt, readVarint());
    } else if (wt === 2) {
      const len = readVarint();
      if (off + len > buf.length) {
        throw new Error('truncated field');
      }
      fn(field, wt, buf.subarray(off, off + len));
      off += len;
    } else if (wt === 1 || wt === 5) {
      off += wt === 1 ? 8 : 4;
      if (off > buf.length) {
        throw new Error('truncated field');
      }
    } else {
      throw new Error(`wire type ${wt}`);
    }
  }
}

function decodeRequest(buf) {
  let service = '';
  walk(buf || Buffer.alloc(0), (field, wt, v) => {
    if (field === 1 && wt === 2) {
      service = v.toString('utf8');
    }
  });
  return { service };
}

function encodeRequest(req) {
  const s = Buffer.from((req && req.service) || '', 'utf8');
  return s.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, ...varint(s.length)]), s]);
}

function encodeResponse(res) {
  const st = (res && res.status) || 0;
  return st === 0 ? Buffer.alloc(0) : Buffer.from([0x08, ...varint(st)]);
}

function decodeResponse(buf) {
  let status = 0;
  walk(buf || Buffer.alloc(0), (field, wt, v) => {
    if (field === 1 && wt === 0) {
      status = v;
    }
  });
  return { status };
}

const HEALTH_SERVICE = {
  Check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    originalName: 'Check',
    requestSerialize: encodeRequest,
    requestDeserialize: decodeRequest,
    responseSerialize: encodeResponse,
    responseDeserialize: decodeResponse,
  },
};

module.exports = { HEALTH_SERVICE, SERVING_STATUS, encodeRequest, decodeRequest };
