'use strict';
// The test.Echo service definition shared by server.js and client.js. Messages are JSON
// objects carried as the bytes of a gRPC message (no .proto, no proto-loader): the wire format
// is real gRPC framing (5-byte prefix, HTTP/2, trailers), only the payload encoding is ours.

function serialize(obj) {
  return Buffer.from(JSON.stringify(obj === undefined ? {} : obj));
}

function deserialize(buf) {
  if (!buf || buf.length === 0) {
    return {};
  }
  return JSON.parse(buf.toString('utf8'));
}

function method(name, requestStream, responseStream) {
  return {
    path: `/test.Echo/${name}`,
    requestStream,
    responseStream,
    originalName: name,
    requestSerialize: serialize,
    requestDeserialize: deserialize,
    responseSerialize: serialize,
    responseDeserialize: deserialize,
  };
}

// kind (as client.js names it) -> method name
const KINDS = {
  unary: 'Unary',
  server: 'ServerStream',
  client: 'ClientStream',
  bidi: 'BidiStream',
};

const ECHO_SERVICE = {
  Unary: method('Unary', false, false),
  ServerStream: method('ServerStream', false, true),
  ClientStream: method('ClientStream', true, false),
  BidiStream: method('BidiStream', true, true),
};

module.exports = { ECHO_SERVICE, KINDS, serialize, deserialize };
