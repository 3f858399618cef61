'use strict';
// The Node side of the SSE fan-out measure (bench/sse.sh): node:http and an
// in-memory Set of responses, the pattern the seeds' chat servers use.
//   GET /events                subscribes (the response joins the Set)
//   GET /publish?n=K&rate=R    publishes K events, R a second (0: all in one
//                              synchronous loop), each written to every
//                              response; answers at once
// Data: process.hrtime.bigint() (CLOCK_MONOTONIC, as the client's) padded
// to 64 bytes. Listens on 127.0.0.1:$PORT and prints "sse.js: port N".
const http = require('node:http');

const subs = new Set();
let id = 0;

function publishOne() {
  id += 1;
  const data = String(process.hrtime.bigint()).padEnd(63, ' ');
  const frame = `id: ${id}\ndata: ${data}\n\n`;
  for (const res of subs) res.write(frame);
}

function publish(n, rate) {
  if (rate <= 0) {
    for (let i = 0; i < n; i++) publishOne();
    return;
  }
  const start = Date.now();
  let i = 0;
  const tick = () => {
    const due = Math.floor(((Date.now() - start) * rate) / 1000) + 1;
    while (i < n && i < due) {
      publishOne();
      i += 1;
    }
    if (i < n) setTimeout(tick, Math.max(0, ((i * 1000) / rate) - (Date.now() - start)));
  };
  tick();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://b');
  if (url.pathname === '/events') {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      'X-Accel-Buffering': 'no',
    });
    res.flushHeaders();
    subs.add(res);
    req.on('close', () => subs.delete(res));
    return;
  }
  if (url.pathname === '/publish') {
    const n = Number(url.searchParams.get('n') || 0);
    const rate = Number(url.searchParams.get('rate') || 0);
    res.end('started\n');
    setImmediate(() => publish(n, rate));
    return;
  }
  res.statusCode = 404;
  res.end();
});
server.keepAliveTimeout = 0;
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`sse.js: port ${server.address().port}`);
});
