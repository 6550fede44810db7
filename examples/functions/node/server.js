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
// This function prints one line per call and, with the Tasklane-Task-Token
// header, posts a line to the task's log (POST /v1/tasks/{id}/logs on
// TASKLANE_URL, default http://127.0.0.1:8080, with the token as bearer:
// `tasklane tasks logs ID` shows it; needs Node 18+ for fetch). It answers
//   {"runtime": "node", "event_id": ..., "type": ..., "data": <the event data>}
// When the event data is a JSON object with "throttle": true, the first call
// of each task is answered 429 with Retry-After: 1 instead (Tasklane retries
// it without using up an attempt), and later calls succeed.
//
//   HOST=127.0.0.1 PORT=8001 TASKLANE_URL=http://127.0.0.1:8080 node examples/functions/node/server.js
//
// PORT=0 picks a free port; the "listening on" line names it.
'use strict';

const http = require('node:http');

const MAX_BODY_BYTES = 1 << 20; // larger events are refused with 413
const MAX_REMEMBERED = 10000; // task ids remembered for "throttle once"
const throttled = new Set();
const TASKLANE_URL = (process.env.TASKLANE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const LOG_TIMEOUT_MS = 5000; // a log line is best effort: the answer does not wait longer

// Appends line to the task's log with the attempt's task token. Best
// effort: a failure is printed, and the attempt is answered anyway.
async function postTaskLog(taskId, token, line) {
  if (!taskId || !token) return;
  try {
    const res = await fetch(`${TASKLANE_URL}/v1/tasks/${encodeURIComponent(taskId)}/logs`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ lines: [line] }),
      signal: AbortSignal.timeout(LOG_TIMEOUT_MS),
    });
    await res.arrayBuffer();
    if (!res.ok) console.log(`task=${taskId} posting the log line failed: ${res.status}`);
  } catch (e) {
    console.log(`task=${taskId} posting the log line failed: ${e.message}`);
  }
}

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

async function handle(req, res, body) {
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
  const token = h['tasklane-task-token'] || '';
  if (data !== null && typeof data === 'object' && data.throttle === true && throttleFirstCall(taskId)) {
    console.log(line + ' answer=429');
    await postTaskLog(taskId, token, 'node: throttled, try again in 1s');
    return answer(res, 429, { error: 'throttled, try again in 1s' }, { 'Retry-After': '1' });
  }
  console.log(line + ' answer=200');
  await postTaskLog(taskId, token, `node: handled event ${eventId}`);
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
    if (!refused) {
      handle(req, res, Buffer.concat(chunks)).catch((e) => {
        console.log(`handling failed: ${e.message}`);
        if (!res.headersSent) answer(res, 500, { error: 'internal error' });
      });
    }
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
