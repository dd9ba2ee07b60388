// The official OpenAI Node SDK on the benchmark's workloads (bench/run drives it).
//   node bench.mjs seq   BASE_URL N                 sequential chat.completions.create
//   node bench.mjs tools BASE_URL N                 sequential tool-call streams, assembled
//   node bench.mjs long  BASE_URL K                 K long streams through the stream helper
//   node bench.mjs conc  BASE_URL INFLIGHT TOTAL    TOTAL streams, INFLIGHT at once
//   node bench.mjs paced BASE_URL N                 N slow streams at once
//   node bench.mjs cold  BASE_URL                   one request (timed from outside)
// Every stream goes through chat.completions.stream(): iterate the chunks, then
// finalChatCompletion(), the helper's own accumulation of the message.
// Prints one line of key=value pairs, as bench/floor.c does.
import OpenAI from 'openai';

const [mode, baseURL, a1, a2] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'sk-bench-not-a-key', maxRetries: 0 });
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Tell me a story about a dragon.' },
];
const streamParams = { model: 'gpt-4o', messages, stream: true, stream_options: { include_usage: true } };

const cpuS = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
const nowS = () => performance.now() / 1e3;
const rssKb = () => process.resourceUsage().maxRSS;
const fail = (why) => { console.error(`node bench: ${why}`); process.exit(1); };

async function oneStream() {
  const stream = client.chat.completions.stream(streamParams);
  let chunks = 0;
  for await (const _chunk of stream) chunks++;
  const final = await stream.finalChatCompletion();
  return { chunks, final };
}

async function seq(n) {
  await client.chat.completions.create({ model: 'gpt-4o', messages });  // warm-up
  const t0 = nowS(), c0 = cpuS();
  for (let i = 0; i < n; i++) {
    const res = await client.chat.completions.create({ model: 'gpt-4o', messages });
    if (!res.choices[0].message.content) fail('no content');
  }
  const wall = nowS() - t0, cpu = cpuS() - c0;
  return `requests=${n} us_wall=${(wall / n * 1e6).toFixed(2)} us_cpu=${(cpu / n * 1e6).toFixed(2)} rss_kb=${rssKb()}`;
}

async function tools(n) {
  await oneStream();
  const t0 = nowS(), c0 = cpuS();
  let chunks = 0;
  for (let i = 0; i < n; i++) {
    const r = await oneStream();
    chunks += r.chunks;
    const calls = r.final.choices[0].message.tool_calls;
    if (!calls || calls.length !== 2) fail('expected two tool calls');
    for (const c of calls) JSON.parse(c.function.arguments);
  }
  const wall = nowS() - t0, cpu = cpuS() - c0;
  return `requests=${n} chunks=${chunks} us_wall=${(wall / n * 1e6).toFixed(2)} us_cpu=${(cpu / n * 1e6).toFixed(2)} rss_kb=${rssKb()}`;
}

async function long(k) {
  await oneStream();  // warm-up on the same connection pool (and the JIT)
  const t0 = nowS(), c0 = cpuS();
  let chunks = 0;
  for (let i = 0; i < k; i++) {
    const r = await oneStream();
    chunks += r.chunks;
    if (r.final.choices[0].message.content.length < 100000) fail('short content');
  }
  const wall = nowS() - t0, cpu = cpuS() - c0;
  return `streams=${k} chunks=${chunks} chunks_per_s=${(chunks / wall).toFixed(0)} us_cpu_per_chunk=${(cpu / chunks * 1e6).toFixed(3)} rss_kb=${rssKb()}`;
}

async function conc(inflight, total) {
  let started = 0, chunks = 0, done = 0;
  const t0 = nowS(), c0 = cpuS();
  async function worker() {
    while (started < total) {
      started++;
      const r = await oneStream();
      if (r.final.choices[0].finish_reason !== 'stop') fail('unfinished stream');
      chunks += r.chunks;
      done++;
    }
  }
  await Promise.all(Array.from({ length: inflight }, worker));
  const wall = nowS() - t0, cpu = cpuS() - c0;
  if (done !== total) fail('lost streams');
  return `inflight=${inflight} streams=${total} chunks=${chunks} chunks_per_s=${(chunks / wall).toFixed(0)} us_cpu_per_chunk=${(cpu / chunks * 1e6).toFixed(3)} rss_kb=${rssKb()}`;
}

async function paced(n) {
  const t0 = nowS(), c0 = cpuS();
  const rs = await Promise.all(Array.from({ length: n }, oneStream));
  const wall = nowS() - t0, cpu = cpuS() - c0;
  const chunks = rs.reduce((s, r) => s + r.chunks, 0);
  return `streams=${n} chunks=${chunks} wall_s=${wall.toFixed(2)} cpu_s=${cpu.toFixed(3)} us_cpu_per_chunk=${(cpu / chunks * 1e6).toFixed(2)} rss_kb=${rssKb()}`;
}

async function cold() {
  const res = await client.chat.completions.create({ model: 'gpt-4o', messages });
  if (!res.choices[0].message.content) fail('no content');
  return 'ok=1';
}

const modes = {
  seq: () => seq(Number(a1 || 1000)),
  tools: () => tools(Number(a1 || 500)),
  long: () => long(Number(a1 || 3)),
  conc: () => conc(Number(a1 || 16), Number(a2 || 1024)),
  paced: () => paced(Number(a1 || 1000)),
  cold,
};
if (!modes[mode]) fail(`unknown mode ${mode}`);
try {
  console.log(await modes[mode]());
} catch (e) {
  fail(e && e.message || String(e));
}
