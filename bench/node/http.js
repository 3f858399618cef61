// The node:http comparator of `make bench`: GET /plaintext and GET /json,
// the JSON serialized per request with JSON.stringify. One process.
// Usage: node http.js PORT   (listens on 127.0.0.1 only)
'use strict';
const http = require('node:http');

const port = Number(process.argv[2] || 18083);
const server = http.createServer((req, res) => {
  if (req.url === '/plaintext') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 13 });
    res.end('Hello, World!');
  } else if (req.url === '/json') {
    const body = JSON.stringify({ message: 'Hello, World!' });
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
// Idle keep-alive connections stay open for the idle-connection measure.
server.keepAliveTimeout = 120000;
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
