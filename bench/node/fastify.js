// The Fastify 5 comparator of `make bench`: GET /plaintext, GET /json and
// GET /app (the same JSON behind two hooks).
// The route has no response schema, so Fastify serializes the returned
// object with JSON.stringify per request. No logger. One process.
// Usage: node fastify.js PORT   (listens on 127.0.0.1 only)
'use strict';
const fastify = require('fastify');

const port = Number(process.argv[2] || 18085);
const app = fastify({ logger: false, keepAliveTimeout: 120000 });
app.get('/plaintext', (req, reply) => {
  reply.type('text/plain').send('Hello, World!');
});
app.get('/json', async () => ({ message: 'Hello, World!' }));
// /app: the same JSON behind two route-level onRequest hooks (Fastify's
// middleware): a security header, and an optional-credentials check.
app.get('/app', {
  onRequest: [
    (req, reply, done) => {
      reply.header('X-Content-Type-Options', 'nosniff');
      done();
    },
    (req, reply, done) => {
      const auth = req.headers.authorization;
      if (auth !== undefined && auth !== 'Bearer bench-secret') {
        reply.code(401).send('Unauthorized');
        return;
      }
      done();
    },
  ],
}, async () => ({ message: 'Hello, World!' }));
app.listen({ port, host: '127.0.0.1' }).catch((err) => {
  console.error(err);
  process.exit(1);
});
process.on('SIGTERM', () => process.exit(0));
