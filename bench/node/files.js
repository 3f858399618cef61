// The Node comparators of bench/files.sh: static files, one process.
//   node files.js stream  PORT DIR   node:http + fs.createReadStream + pipeline
//   node files.js fastify PORT DIR   Fastify 5 + @fastify/static (its defaults:
//                                    ETag, Last-Modified, ranges, send's streams)
'use strict';

const [mode, port, dir] = process.argv.slice(2);
const path = require('node:path');

if (mode === 'stream') {
  const http = require('node:http');
  const fs = require('node:fs');
  const { pipeline } = require('node:stream');
  http.createServer((req, res) => {
    // No traversal: the bench asks for two fixed names only.
    const name = path.basename(decodeURIComponent(req.url.split('?')[0]));
    const file = path.join(dir, name);
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.statusCode = 404;
        res.end('not found\n');
        return;
      }
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Content-Length', st.size);
      pipeline(fs.createReadStream(file), res, (e) => {
        if (e && !res.headersSent) {
          res.statusCode = 500;
          res.end();
        }
      });
    });
  }).listen(Number(port), '127.0.0.1');
} else if (mode === 'fastify') {
  const app = require('fastify')({ logger: false });
  app.register(require('@fastify/static'), { root: path.resolve(dir) });
  app.listen({ port: Number(port), host: '127.0.0.1' });
} else {
  console.error('usage: node files.js stream|fastify PORT DIR');
  process.exit(2);
}
