"""SlateDB side of the peers benchmark (scripts/lib/peers/slatedb.ts).

Runs in the virtual environment the bench makes under its cache directory,
with the `slatedb` package from PyPI. Reads one JSON command per line on
stdin and answers one JSON line on stdout (logs go to stderr):

  {"cmd": "open", "url": "s3://BUCKET", "path": "db"}
  {"cmd": "phase", "writers": N, "compact": bool, "ops": [[key, base64 | null], ...]}
      every put and delete is durable before the writer takes the next op
      (WriteHandle.await_durable: the WAL object holding it is in the store);
      with "compact": flush the memtable to L0, then one manual compaction of
      every L0 SST and sorted run into one sorted run, waited for until the
      manifest shows it (status COMPLETED).
  {"cmd": "verify", "expect": [[key, sha256 hex | null], ...]}
  {"cmd": "metrics"}   the client's counters (DefaultMetricsRecorder) and the compaction submits
  {"cmd": "close"}     shuts the database down; the driver exits at the end of stdin

The object store is resolved from the URL and the AWS_* environment
(endpoint, credentials, region, AWS_ALLOW_HTTP).
"""

import asyncio
import base64
import hashlib
import json
import sys
import time

from slatedb.uniffi import (
    AdminBuilder,
    CompactionSpec,
    CompactionStatus,
    DbBuilder,
    DefaultMetricsRecorder,
    FlushOptions,
    FlushType,
    ObjectStore,
    SourceId,
)


def log(msg):
    print(f"slatedb: {msg}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self):
        self.db = None
        self.admin = None
        self.recorder = None
        # submit_compaction goes through the Admin handle, which has no metrics recorder:
        # counted here (each submit writes the compactions object once).
        self.submits = 0
        self.status_reads = 0

    async def open(self, url, path):
        store = ObjectStore.resolve(url)
        builder = DbBuilder(path, store)
        self.recorder = DefaultMetricsRecorder()
        builder.with_metrics_recorder(self.recorder)
        self.db = await builder.build()
        self.admin = AdminBuilder(path, store).build()
        return {}

    async def phase(self, ops, writers, compact):
        queue = list(ops)
        queue.reverse()
        db = self.db

        async def worker():
            while queue:
                key, value = queue.pop()
                k = key.encode()
                if value is None:
                    handle = await db.delete(k)
                else:
                    handle = await db.put(k, base64.b64decode(value))
                await handle.await_durable()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(1, min(writers, len(ops))))))
        t1 = time.perf_counter()
        out = {"opsMs": (t1 - t0) * 1000}
        if compact:
            out.update(await self.compact())
        out["wallMs"] = (time.perf_counter() - t0) * 1000
        return out

    async def compact(self):
        t0 = time.perf_counter()
        self.status_reads = 0
        await self.db.flush_with_options(FlushOptions(flush_type=FlushType.MEM_TABLE))
        t1 = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            m = await self.admin.read_manifest(None)
            sources = [SourceId.SST_VIEW(v.id) for v in m.l0] + [SourceId.SORTED_RUN(r.id) for r in m.compacted]
            if len(sources) <= 1 and not m.l0:
                break  # already one sorted run
            dest = min((r.id for r in m.compacted), default=0)
            before = self.compactor_progress()
            c = await self.admin.submit_compaction(CompactionSpec.TIERED(b"", sources, dest))
            self.submits += 1
            # Wait without requests (each Admin read is a GET or LIST, counted at MinIO) until the
            # in-process compactor has written output, then read the status until COMPLETED
            # (the manifest names the new sorted run).
            waited = 0.0
            while self.compactor_progress() == before and waited < 30:
                await asyncio.sleep(0.05)
                waited += 0.05
            while True:
                cc = await self.admin.read_compaction(c.id, None)
                self.status_reads += 1
                if cc is not None and cc.status in (CompactionStatus.COMPLETED, CompactionStatus.FAILED):
                    break
                await asyncio.sleep(0.25)
            if cc.status == CompactionStatus.COMPLETED:
                break
            if attempts >= 5:
                raise RuntimeError(f"compaction {c.id} failed {attempts} times")
            log(f"compaction {c.id} failed; resubmitting")
        m = await self.admin.read_manifest(None)
        return {
            "flushMs": (t1 - t0) * 1000,
            "compactMs": (time.perf_counter() - t1) * 1000,
            "l0": len(m.l0),
            "sortedRuns": len(m.compacted),
            "statusReads": self.status_reads,
        }

    def compactor_progress(self):
        # Counters of the in-process compactor (no I/O): they move when a compaction writes output.
        return sum(
            m.value[0]
            for m in self.recorder.snapshot()
            if m.name in ("slatedb.compactor.ssts_written", "slatedb.compactor.bytes_compacted") and m.value.is_counter()
        )

    async def verify(self, expect):
        problems = []
        for key, digest in expect:
            got = await self.db.get(key.encode())
            if digest is None:
                if got is not None:
                    problems.append(f"{key} should be deleted")
            elif got is None:
                problems.append(f"{key} missing")
            elif hashlib.sha256(got).hexdigest() != digest:
                problems.append(f"{key} differs")
        return {"problems": problems}

    def metrics(self):
        out = []
        for m in self.recorder.snapshot():
            v = m.value
            if v.is_counter() or v.is_gauge() or v.is_up_down_counter():
                out.append({"name": m.name, "labels": {l.key: l.value for l in m.labels}, "value": v[0]})
        return {"metrics": out, "compactionSubmits": self.submits}

    async def close(self):
        if self.db is not None:
            await self.db.shutdown()
            self.db = None
        return {}


async def main():
    bench = Bench()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        req = json.loads(line)
        cmd = req.get("cmd")
        try:
            if cmd == "open":
                res = await bench.open(req["url"], req["path"])
            elif cmd == "phase":
                res = await bench.phase(req["ops"], req["writers"], req["compact"])
            elif cmd == "verify":
                res = await bench.verify(req["expect"])
            elif cmd == "metrics":
                res = bench.metrics()
            elif cmd == "close":
                res = await bench.close()
            else:
                raise ValueError(f"unknown command {cmd!r}")
            res["ok"] = True
        except Exception as e:  # one line back to the parent
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()
    await bench.close()


if __name__ == "__main__":
    asyncio.run(main())
