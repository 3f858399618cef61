// The Express 5 comparator of `make bench`: GET /plaintext and GET /json
// (res.json, which serializes with JSON.stringify per request), with
// Express's defaults (ETag, X-Powered-By) as its users get them. One process.
// Usage: node express.js PORT   (listens on 127.0.0.1 only)
'use strict';
const express = require('express');

const port = Number(process.argv[2] || 18084);
const app = express();
app.get('/plaintext', (req, res) => {
  res.type('text/plain').send('Hello, World!');
});
app.get('/json', (req, res) => {
  res.json({ message: 'Hello, World!' });
});
const server = app.listen(port, '127.0.0.1');
server.keepAliveTimeout = 120000;
process.on('SIGTERM', () => process.exit(0));
