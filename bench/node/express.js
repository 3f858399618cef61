// The Express 5 comparator of `make bench`: GET /plaintext and GET /json
// (res.json, which serializes with JSON.stringify per request), GET /app
// (the same through two middlewares), with
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
// /app: the same JSON through two middlewares on the /app prefix (a
// security header; an optional-credentials check), as bench/apps/latch_bench.c.
app.use('/app', (req, res, next) => {
  res.set('X-Content-Type-Options', 'nosniff');
  next();
});
app.use('/app', (req, res, next) => {
  const auth = req.get('authorization');
  if (auth !== undefined && auth !== 'Bearer bench-secret') {
    res.sendStatus(401);
    return;
  }
  next();
});
app.get('/app', (req, res) => {
  res.json({ message: 'Hello, World!' });
});
const server = app.listen(port, '127.0.0.1');
server.keepAliveTimeout = 120000;
process.on('SIGTERM', () => process.exit(0));
