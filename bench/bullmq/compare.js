// Bench only (never part of the product): the BullMQ port's queue, as the anchor of our figures.
//
// One BullMQ Worker at concurrency 4 on the Redis at argv[2] (the private redis-server of the
// Python bench that starts this script), a no-op processor, completed jobs removed (our huey keeps
// no results either). One warm-up round, then one measured round:
//   add_bulk_s: Queue.addBulk of N jobs (one call; the counterpart of our cron run's enqueue)
//   drain_s:    from resuming the paused queue (N jobs waiting) to the N-th "completed" event
//               (the counterpart of our N no-ops pushed in one LPUSH and drained by 4 workers)
// Prints one JSON line; bench/bullmq_compare.py alternates it with our own figures.
//
// Run: node bench/bullmq/compare.js redis://127.0.0.1:PORT/0 [N] [CONCURRENCY]
"use strict";

const { Queue, Worker } = require("bullmq");
const IORedis = require("ioredis");

const url = process.argv[2];
const N = Number(process.argv[3] || 10000);
const CONCURRENCY = Number(process.argv[4] || 4);
const QUEUE = "seatwatch-bench-noop";

function connection() {
  // BullMQ's Worker requires maxRetriesPerRequest: null (its blocking reads must not be retried)
  return new IORedis(url, { maxRetriesPerRequest: null });
}

function jobs(n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = { name: "noop", data: { i }, opts: { removeOnComplete: true, removeOnFail: true } };
  }
  return out;
}

async function main() {
  const queue = new Queue(QUEUE, { connection: connection() });
  await queue.obliterate({ force: true }).catch(() => {});
  let done = 0;
  let waiter = null;
  const worker = new Worker(QUEUE, async () => {}, { connection: connection(), concurrency: CONCURRENCY });
  worker.on("completed", () => {
    done += 1;
    if (waiter && done >= waiter.target) {
      const w = waiter;
      waiter = null;
      w.resolve(process.hrtime.bigint());
    }
  });
  await worker.waitUntilReady();

  async function round() {
    await queue.pause();
    const batch = jobs(N);
    const t0 = process.hrtime.bigint();
    await queue.addBulk(batch);
    const t1 = process.hrtime.bigint();
    const finished = new Promise((resolve) => { waiter = { target: done + N, resolve }; });
    const t2 = process.hrtime.bigint();
    await queue.resume();
    const t3 = await finished;
    return { add_bulk_s: Number(t1 - t0) / 1e9, drain_s: Number(t3 - t2) / 1e9 };
  }

  await round(); // warm-up: JIT, Lua scripts loaded, connections open
  const measured = await round();
  await worker.close();
  await queue.close();
  const pkg = (name) => require(`${name}/package.json`).version;
  console.log(JSON.stringify({ n: N, concurrency: CONCURRENCY, ...measured, bullmq: pkg("bullmq"),
                               ioredis: pkg("ioredis"), node: process.versions.node }));
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
