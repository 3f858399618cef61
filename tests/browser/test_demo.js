'use strict';
/*
 * test_demo.js - `latch demo` in a real browser (headless chromium): the
 * page a newcomer gets from `make run`.
 *
 * Each bug's button is clicked as a person would, one after the other;
 * the page must show the response that arrived (the status, a body cut
 * half way marked as cut, an abandoned request, the event stream and the
 * publish) and the report latch made for that very request (its code and
 * the line of demo_bugs.c the page shows), or that there was none; the
 * violation counters at the top follow over Server-Sent Events, without a
 * reload, to the total the clicks caused. Then SIGTERM: exit 0.
 */
const d = require('./driver');

/* What each section must show: the response, and each report's code
 * (none: an empty list and "no report"). */
const expected = {
  'missing-return': { res: /^HTTP 404 /, codes: ['ERR_HTTP_HEADERS_SENT'] },
  'double-next': { res: /^HTTP 200 [^]*"order":1/, codes: ['ERR_NEXT_TWICE'] },
  'catch-and-forward': {
    res: /^HTTP 500 [^]*inventory unavailable/,
    codes: ['ERR_NEXT_AFTER_RESPONSE', 'ERR_HTTP_HEADERS_SENT', 'ERR_HTTP_HEADERS_SENT'],
  },
  'timer-race': { res: /^HTTP 504 [^]*took too long/, codes: ['ERR_HTTP_HEADERS_SENT'] },
  'async-after-500': { res: /^HTTP 500 [^]*payment service/, codes: ['ERR_HTTP_HEADERS_SENT'] },
  'pipe-failed': {
    res: /^HTTP 200 [^]*\[the connection was cut: the body is truncated/,
    codes: ['ERR_STREAM_DESTROYED'],
  },
  'proxy-client-left': { res: /^nothing: the page gave up after 200 ms/, codes: [] },
  'pubsub-after-close': {
    res: /^HTTP 200 text\/event-stream\nevent: joined[^]*publish: \{"posted_to":\d+\}/,
    codes: ['ERR_STREAM_DESTROYED'],
  },
  'return-and-send': { res: /^HTTP 200 [^]*"lamp"/, codes: ['ERR_NEXT_AFTER_RESPONSE'] },
};

d.main(async (t) => {
  const bin = process.env.LATCH_BIN;
  if (!bin) throw new Error('LATCH_BIN is not set (run through ctest)');
  const demo = await t.spawn(bin, ['demo', '--port', '0', '--workers', '2'], {
    ready: /listening on (http:\/\/127\.0\.0\.1:\d+\/)/, name: 'latch-demo',
  });
  const page = await t.page(demo.match[1], 'demo');
  await d.waitFor(async () => (await page.textContent('#live')) === '(live)',
    10000, 'the counters to be live');

  const names = await page.$$eval('section.bug', (ss) => ss.map((s) => s.id));
  d.check(names.join() === Object.keys(expected).join(),
    `the page lists the nine bugs in order: ${names.join()}`);
  let total = 0;
  for (const name of names) {
    const want = expected[name];
    const sec = `section#${name}`;
    /* The handler's source, numbered as in the file. */
    const code = await page.textContent(`${sec} pre.code`);
    d.check(/^ {1,3}\d+ {2}static (int|void)/m.test(code), `${name}: numbered source`);
    await page.click(`${sec} button`);
    const rep = await d.waitFor(async () => {
      const s = await page.textContent(`${sec} pre.rep`);
      return s.startsWith('request ') ? s : null;
    }, 15000, `${name}: the report panel`);
    const res = await page.textContent(`${sec} pre.res`);
    d.check(want.res.test(res), `${name}: the response shown: ${JSON.stringify(res)}`);
    const codes = [...rep.matchAll(/^latch: (ERR_[A-Z_]+):/gm)].map((m) => m[1]);
    d.check(codes.join() === want.codes.join(),
      `${name}: reports ${codes.join()} (want ${want.codes.join()}): ${rep}`);
    if (codes.length === 0) {
      d.check(rep.includes('no report'), `${name}: says there was no report`);
    } else {
      /* Each report names a line the page shows. */
      for (const m of rep.matchAll(/demo_bugs\.c:(\d+),/g)) {
        d.check(new RegExp(`^ *${m[1]}  `, 'm').test(code),
          `${name}: line ${m[1]} is on the page`);
      }
    }
    total += codes.length;
  }
  /* The counters followed over SSE, without a reload. */
  await d.waitFor(async () =>
    (await page.textContent('#counts [data-code="total"]')) === String(total),
  5000, `the live total to reach ${total}`);
  const st = await demo.stop('SIGTERM');
  d.check(st.code === 0, `latch demo exited with ${JSON.stringify(st)}`);
}, { ms: 90000 });
