'use strict';
/*
 * test_chat.js - examples/chat in a real browser (headless chromium): two
 * chat processes sharing one Redis, a page on each.
 *
 * 1. Messages typed into each page's form and posted to either process
 *    reach both pages, once each, in the same order with the same ids.
 * 2. Process A is stopped (SIGTERM: its streams get latch-shutdown and
 *    end) and messages are posted to B while A is down; A is started again
 *    on the same port. The page on A reconnects by itself (EventSource,
 *    retry 500 ms) with Last-Event-ID and receives what it missed, then
 *    new messages: its list equals B's page's list, no loss, no
 *    duplicate, no latch-gap (the restarted process loads the channel's
 *    history from the Redis Stream before it answers Last-Event-ID).
 *
 * Without redis-server it skips (the resume across a restart needs the
 * Redis Stream: one process alone forgets its history when it stops).
 */
const d = require('./driver');

/* What a page holds: [{id, text}], the gap count and the opens. */
const state = (page) => page.evaluate(() => ({
  received: window.received, gaps: window.gaps, opens: window.opens,
}));

async function post(base, text) {
  const r = await fetch(`${base}send`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ text }).toString(),
  });
  d.check(r.status === 204, `POST /send to ${base}: ${r.status}`);
}

/* Types into the page's form and submits it, as a person would. */
async function typeAndSend(page, text) {
  await page.fill('#text', text);
  await page.click('button');
}

const count = (page, n, what) => d.waitFor(async () => {
  const s = await state(page);
  return s.received.length >= n ? s : null;
}, 15000, what);

/* Redis stream ids "ms-seq", strictly increasing, each once. */
function checkIds(list, label) {
  let prev = [0n, 0n];
  for (const m of list) {
    const parts = m.id.split('-');
    d.check(parts.length === 2, `${label}: id ${m.id} is not a stream id`);
    const cur = [BigInt(parts[0]), BigInt(parts[1])];
    d.check(cur[0] > prev[0] || (cur[0] === prev[0] && cur[1] > prev[1]),
      `${label}: id ${m.id} does not follow ${prev.join('-')}`);
    prev = cur;
  }
}

function sameList(a, b, label) {
  d.check(a.length === b.length, `${label}: ${a.length} vs ${b.length} messages`);
  for (let i = 0; i < a.length; i++) {
    d.check(a[i].id === b[i].id && a[i].text === b[i].text,
      `${label}: message ${i}: ${JSON.stringify(a[i])} vs ${JSON.stringify(b[i])}`);
  }
}

d.main(async (t) => {
  const chat = d.example('chat');
  const redis = await t.redis();
  const ready = /listening on (http:\/\/127\.0\.0\.1:(\d+)\/)/;
  let a = await t.spawn(chat, ['-p', '0', '-r', redis.url], { ready, name: 'chat-A' });
  const b = await t.spawn(chat, ['-p', '0', '-r', redis.url], { ready, name: 'chat-B' });
  const urlA = a.match[1], portA = a.match[2], urlB = b.match[1];

  const pa = await t.page(urlA, 'A');
  const pb = await t.page(urlB, 'B');
  for (const [p, l] of [[pa, 'A'], [pb, 'B']]) {
    await d.waitFor(async () => (await p.textContent('#status')) === 'live',
      10000, `page ${l} to be live`);
  }
  /* Both processes subscribed in Redis before the first message. */
  await d.waitFor(async () => {
    const r = await d.redis(redis.port, ['PUBSUB', 'NUMSUB', 'latch:c:room']);
    return r[1] === 2;
  }, 10000, 'both chat processes to SUBSCRIBE');

  /* 1: the forms of both pages, then a burst through both processes. */
  const sent = [];
  for (let i = 0; i < 4; i++) {
    const text = `form ${i} é ✓`;
    await typeAndSend(i % 2 ? pb : pa, text);
    sent.push(text);
    await count(pa, sent.length, `form message ${i} on page A`);
  }
  /* In blocks: the order across processes is the order Redis ran the
   * publishes in, and a 204 does not wait for Redis. */
  for (const [base, l] of [[urlA, 'A'], [urlB, 'B'], [urlA, 'A']]) {
    for (let i = 0; i < 15; i++) {
      const text = `burst ${l} ${sent.length}`;
      await post(base, text);
      sent.push(text);
    }
    await count(pa, sent.length, `the block posted to ${l}`);
  }
  let sa = await count(pa, sent.length, 'page A to get the burst');
  let sb = await count(pb, sent.length, 'page B to get the burst');
  d.check(sa.received.map((m) => m.text).join('|') === sent.join('|'),
    'page A got the messages in the order they were posted');
  sameList(sa.received, sb.received, 'A and B before the restart');
  checkIds(sa.received, 'page A');

  /* 2: A stops; B's room goes on; A comes back on the same port. */
  const st = await a.stop('SIGTERM');
  d.check(st.code === 0, `chat A exited with ${JSON.stringify(st)}`);
  await d.waitFor(async () => (await pa.textContent('#status')) === 'reconnecting',
    10000, 'page A to notice the restart');
  for (let i = 0; i < 10; i++) {
    const text = `while A is down ${i}`;
    await post(urlB, text);
    sent.push(text);
  }
  await count(pb, sent.length, 'page B to get what A missed');
  a = await t.spawn(chat, ['-p', portA, '-r', redis.url], { ready, name: 'chat-A2' });
  await count(pa, sent.length, 'page A to resume from Last-Event-ID');
  for (const [base, l] of [[urlA, 'A'], [urlB, 'B']]) {
    for (let i = 0; i < 5; i++) {
      const text = `after the restart ${l} ${i}`;
      await post(base, text);
      sent.push(text);
    }
    await count(pb, sent.length, `the block posted to ${l} after the restart`);
  }
  sb = await count(pb, sent.length, 'page B after the restart');
  sa = await count(pa, sent.length, 'page A after the restart');
  /* Nothing more arrives late (a duplicate would). */
  await d.sleep(300);
  sa = await state(pa);
  d.check(sa.opens >= 2, `page A reconnected (${sa.opens} opens)`);
  d.check(sa.gaps === 0 && sb.gaps === 0, `no latch-gap (A ${sa.gaps}, B ${sb.gaps})`);
  d.check(sa.received.map((m) => m.text).join('|') === sent.join('|'),
    'page A: every message once, in order, across the restart');
  sameList(sa.received, sb.received, 'A and B after the restart');
  checkIds(sa.received, 'page A');
}, { ms: 90000 });
