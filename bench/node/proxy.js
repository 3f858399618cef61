// The Node reverse proxies of bench/proxy.sh: every request forwarded to
// one upstream, as latch_use_proxy and nginx's proxy_pass do there.
//   node proxy.js http-proxy PORT UPSTREAM     http-proxy 1.18 on node:http,
//       with a keep-alive agent (64 idle sockets kept, as nginx's
//       `keepalive 64`; without an agent http-proxy opens a connection per
//       request)
//   node proxy.js fastify-proxy PORT UPSTREAM  Fastify 5 + @fastify/http-proxy
//       (undici's pool, its defaults: keep-alive)
// UPSTREAM is http://127.0.0.1:PORT. One process; listens on 127.0.0.1 only.
'use strict';
const http = require('node:http');

const [mode, portArg, upstream] = process.argv.slice(2);
const port = Number(portArg);
if (!upstream || !(port > 0)) {
  console.error('usage: node proxy.js http-proxy|fastify-proxy PORT UPSTREAM');
  process.exit(2);
}

if (mode === 'http-proxy') {
  const httpProxy = require('http-proxy');
  const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64 });
  const proxy = httpProxy.createProxyServer({ target: upstream, agent });
  proxy.on('error', (err, req, res) => {
    // res is gone when the client left: nothing to answer then
    if (res.writableEnded || res.destroyed) return;
    if (!res.headersSent) res.writeHead(502, { 'Content-Length': 0 });
    res.end();
  });
  const server = http.createServer((req, res) => proxy.web(req, res));
  server.keepAliveTimeout = 120000;
  server.listen(port, '127.0.0.1');
} else if (mode === 'fastify-proxy') {
  const fastify = require('fastify')({ logger: false, keepAliveTimeout: 120000 });
  fastify.register(require('@fastify/http-proxy'), { upstream });
  fastify.listen({ port, host: '127.0.0.1' }).catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  console.error(`proxy.js: unknown mode ${mode}`);
  process.exit(2);
}
process.on('SIGTERM', () => process.exit(0));
