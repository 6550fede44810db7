// A Tasklane HTTP function in Node.js, standard library only (node:http).
//
// Tasklane POSTs each task's CloudEvent in binary mode: the attributes are
// ce-* headers (ce-id, ce-source, ce-type, ...), the data is the body, and
// Tasklane adds Tasklane-Task-Id, Tasklane-Attempt (1-based) and
// Tasklane-Deadline (RFC 3339; the attempt is cut off then). The answer
// classifies the attempt: 2xx succeeds with the body as the task's result,
// 429 and 503 are throttled (retried after Retry-After), 408 and other 5xx
// are retried with backoff, and other 4xx end the task.
//
// This function logs one line per call and answers
//   {"runtime": "node", "event_id": ..., "type": ..., "data": <the event data>}
// When the event data is a JSON object with "throttle": true, the first call
// of each task is answered 429 with Retry-After: 1 instead (Tasklane retries
// it without using up an attempt), and later calls succeed.
//
//   HOST=127.0.0.1 PORT=8001 node examples/functions/node/server.js
//
// PORT=0 picks a free port; the "listening on" line names it.
'use strict';

const http = require('node:http');

const MAX_BODY_BYTES = 1 << 20; // larger events are refused with 413
const MAX_REMEMBERED = 10000; // task ids remembered for "throttle once"
const throttled = new Set();

// True the first time taskId is seen (bounded memory).
function throttleFirstCall(taskId) {
  if (throttled.has(taskId)) return false;
  throttled.add(taskId);
  if (throttled.size > MAX_REMEMBERED) throttled.delete(throttled.values().next().value);
  return true;
}

function answer(res, status, obj, headers = {}) {
  const b = Buffer.from(JSON.stringify(obj));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': b.length, ...headers });
  res.end(b);
}

function handle(req, res, body) {
  const h = req.headers;
  const eventId = h['ce-id'];
  const eventType = h['ce-type'];
  if (!h['ce-specversion'] || !eventId || !eventType) {
    return answer(res, 400, { error: 'not a binary-mode CloudEvent: ce-specversion, ce-id and ce-type are required' });
  }
  let data = body.toString('utf8');
  if ((h['content-type'] || '').includes('json') && body.length > 0) {
    try {
      data = JSON.parse(data);
    } catch {
      return answer(res, 400, { error: 'event data is not valid JSON' });
    }
  }
  const taskId = h['tasklane-task-id'] || '';
  const line = `task=${taskId} attempt=${h['tasklane-attempt'] || ''} deadline=${h['tasklane-deadline'] || ''} ` +
    `event=${eventId} type=${eventType} source=${h['ce-source'] || ''}`;
  if (data !== null && typeof data === 'object' && data.throttle === true && throttleFirstCall(taskId)) {
    console.log(line + ' answer=429');
    return answer(res, 429, { error: 'throttled, try again in 1s' }, { 'Retry-After': '1' });
  }
  console.log(line + ' answer=200');
  answer(res, 200, { runtime: 'node', event_id: eventId, type: eventType, data });
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') return answer(res, 405, { error: 'POST a CloudEvent' });
  const chunks = [];
  let size = 0;
  let refused = false;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY_BYTES && !refused) {
      refused = true;
      answer(res, 413, { error: `event data over ${MAX_BODY_BYTES} bytes` });
      req.destroy();
    } else if (!refused) {
      chunks.push(c);
    }
  });
  req.on('end', () => {
    if (!refused) handle(req, res, Buffer.concat(chunks));
  });
});
server.requestTimeout = 30000;
server.headersTimeout = 10000;

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 8001);
server.listen(port, host, () => {
  const a = server.address();
  console.log(`listening on ${a.address}:${a.port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
