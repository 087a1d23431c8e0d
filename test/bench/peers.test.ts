// Goal: `npm run bench:peers` reports what it measured consistently: every
// row's amplification is its bytes PUT over the user's bytes, a total is the
// sum of its phases, client and server counts are compared, the table, JSON
// and SVG carry every row. The glidekv row runs for real (a tiny workload on
// a file store, counted by glidekv itself); the peers need their toolchains
// and a MinIO, and stay out of `npm test`.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { renderPeersChart } from '../../scripts/lib/peers/chart.js';
import { diff, type BucketCounters } from '../../scripts/lib/peers/minio-counters.js';
import { parseMetrics, sumMetric } from '../../src/cli/bench/minio-metrics.js';
import { chartInput, formatTable, JUICEFS_HAND_ROW, toJson, type PeersDoc } from '../../scripts/lib/peers/report.js';
import { crossCheck, phaseRow, totalOf } from '../../scripts/lib/peers/results.js';
import { runPeers, selectSystems, SYSTEMS } from '../../scripts/lib/peers/run.js';
import { parseS3backerStats } from '../../scripts/lib/peers/s3backer.js';
import { clientFromMetrics } from '../../scripts/lib/peers/slatedb.js';
import { buildWorkload, FULL, QUICK, userBytesOf, type WorkloadParams } from '../../scripts/lib/peers/workload.js';

const traffic = (puts: number, bytes: number, gets = 0) => ({ puts, gets, uploadedBytes: bytes, downloadedBytes: 0, requests: { PutObject: puts } });

describe('bench:peers accounting', () => {
  it('a phase amplification is bytes PUT / user bytes; the server figures win over the client', () => {
    const p = phaseRow('write', 1000, 12.4, traffic(7, 5000, 3), { puts: 7, uploadedBytes: 4096 });
    expect(p.puts).toBe(7);
    expect(p.uploadedBytes).toBe(5000);
    expect(p.gets).toBe(3);
    expect(p.amplification).toBe(5);
    expect(p.wallMs).toBe(12);
    const c = phaseRow('write', 2000, 1, null, { puts: 4, uploadedBytes: 3000 });
    expect([c.puts, c.uploadedBytes, c.gets, c.amplification]).toEqual([4, 3000, null, 1.5]);
    expect(phaseRow('close', 0, 1, traffic(2, 10), null).amplification).toBe(0);
  });

  it('a total sums its phases and recomputes the amplification; the cross-check names the phases that differ', () => {
    const phases = [
      phaseRow('write', 1000, 10, traffic(5, 4000), { puts: 5, uploadedBytes: 4000 }),
      phaseRow('round 1', 100, 20, traffic(3, 1000), { puts: 2, uploadedBytes: 900 }),
      phaseRow('close', 0, 5, traffic(1, 500), null),
    ];
    const t = totalOf(phases);
    expect([t.puts, t.uploadedBytes, t.userBytes, t.wallMs]).toEqual([9, 5500, 1100, 35]);
    expect(t.amplification).toBeCloseTo(5500 / 1100, 12);
    expect(t.client).toEqual({ puts: 7, uploadedBytes: 4900 });
    const check = crossCheck(phases, 'x');
    expect(check).toMatchObject({ server: 8, client: 7, agree: false });
    expect(check.note).toContain('round 1: 2 vs 3');
    expect(crossCheck(phases.slice(0, 1), 'x')).toMatchObject({ server: 5, client: 5, agree: true });
    expect(crossCheck([phaseRow('w', 1, 1, null, { puts: 1, uploadedBytes: 1 })], 'x')).toMatchObject({ server: null, client: 1, agree: null });
  });

  it("reads MinIO's v3 bucket counters per API and diffs two readings", () => {
    const page = [
      '# HELP minio_bucket_api_total Total number of requests',
      'minio_bucket_api_total{bucket="b1",name="PutObject",server="127.0.0.1:9000",type="s3"} 12',
      'minio_bucket_api_total{bucket="b1",name="GetObject",server="127.0.0.1:9000",type="s3"} 3',
      'minio_bucket_api_traffic_sent_bytes{bucket="b1",server="127.0.0.1:9000",type="s3"} 4096',
    ].join('\n');
    const s = parseMetrics(page);
    expect(s).toHaveLength(3);
    expect(s[0]).toEqual({ name: 'minio_bucket_api_total', labels: { bucket: 'b1', name: 'PutObject', server: '127.0.0.1:9000', type: 's3' }, value: 12 });
    // One parser for every MinIO page (v2 cluster, v2 bucket, v3 bucket): sums over servers, only the matching labels.
    const v2 = parseMetrics(
      [
        'minio_s3_requests_total{api="putobject",server="127.0.0.1:9000"} 5',
        'minio_s3_requests_total{api="putobject",server="127.0.0.1:9001"} 2',
        'minio_s3_requests_total{api="getobject",server="127.0.0.1:9000"} 40',
        'minio_s3_requests_total_other{api="putobject"} 100',
      ].join('\n'),
    );
    expect(sumMetric(v2, 'minio_s3_requests_total', { api: 'putobject' })).toBe(7);
    expect(sumMetric(v2, 'minio_s3_requests_total')).toBe(47);
    expect(sumMetric(s, 'minio_bucket_api_total', { bucket: 'b2' })).toBe(0);
    const a: BucketCounters = { requests: { PutObject: 10, GetObject: 3 }, bytesIn: 1000, bytesOut: 0 };
    const b: BucketCounters = { requests: { PutObject: 15, PutObjectPart: 2, GetObject: 4, ListObjectsV2: 1 }, bytesIn: 3000, bytesOut: 50 };
    expect(diff(a, b)).toEqual({
      puts: 7,
      gets: 1,
      uploadedBytes: 2000,
      downloadedBytes: 50,
      requests: { PutObject: 5, PutObjectPart: 2, GetObject: 1, ListObjectsV2: 1 },
    });
  });

  it("parses the clients' own counters (s3backer stats, SlateDB metrics)", () => {
    const stats = parseS3backerStats('http_puts                    4\nhttp_avg_put_time            0.032 sec\nblock_cache_current_size     3 blocks\n');
    expect(stats).toEqual({ http_puts: 4, http_avg_put_time: 0.032, block_cache_current_size: 3 });
    const m = (api: string, component: string, value: number, name = 'slatedb.object_store.request_count') => ({ name, labels: { api, component, op: 'x' }, value });
    expect(
      clientFromMetrics([m('put', 'db', 10), m('put', 'compactor', 2), m('multipart_part', 'db', 1), m('get', 'db', 5), m('head', 'db', 9), m('put', 'db', 99, 'slatedb.object_store.error_count')], 3),
    ).toEqual({ puts: 16, uploadedBytes: null, gets: 5 });
    expect(clientFromMetrics([], 0)).toBeNull();
  });

  it('the workload is the issue\'s, and its rounds choose the same keys every time', () => {
    expect(FULL).toEqual({ values: 40, valueSize: 256 * 1024, small: 2000, smallSize: 100, rounds: 5, writers: 8 });
    const a = buildWorkload(QUICK);
    const b = buildWorkload(QUICK);
    expect(a.phases.map((p) => p.name)).toEqual(['write', 'round 1', 'round 2']);
    expect(a.phases.map((p) => p.ops.map(([k, v]) => [k, v === undefined]))).toEqual(b.phases.map((p) => p.ops.map(([k, v]) => [k, v === undefined])));
    expect(a.userBytes).toBe(userBytesOf(QUICK));
    expect(a.phases[1].ops).toHaveLength(QUICK.small / 2);
    expect(a.phases[0].compact).toBe(false);
    expect(a.phases[1].compact).toBe(true);
  });

  it('the chart has a bar per row and panel, and the hand-measured JuiceFS row beside a full run', () => {
    const total = phaseRow('total', userBytesOf(FULL), 1000, traffic(14273, 1784 * 2 ** 20), null);
    const doc = {
      date: '2026-12-03T14:45:00.000Z',
      quick: false,
      workload: FULL,
      userBytes: userBytesOf(FULL),
      store: 'MinIO x',
      versions: { glidekv: 'glidekv 0.1.0 (main 0123456789)', node: 'v20.20.2' },
      rows: [
        { id: 'glidekv-upload-separated', label: 'glidekv --fsync upload, separated', status: 'ok', total, phases: [total], outside: null, check: { server: 14273, client: null, agree: null, note: 'MinIO only' } },
        { id: 's3backer-defaults', label: 's3backer + ext4, defaults', status: 'skipped', reason: 'no s3backer', total: null, phases: [] },
      ],
      handMeasured: [JUICEFS_HAND_ROW],
    } as unknown as PeersDoc;
    const svg = renderPeersChart(chartInput(doc));
    expect((svg.match(/<rect /g) ?? []).length).toBe(1 + 2 * 2); // background + 2 panels × (glidekv + JuiceFS)
    expect(svg).toContain('>14,273<');
    expect(svg).toContain(`>${total.amplification.toFixed(0)}×  (1,784 MiB)<`);
    expect(svg).toContain('JuiceFS 1.3 (by hand, 2026-12)');
    expect(svg).toContain('>7,099<');
    expect(svg).toContain(`>1.02×  (${((1.02 * doc.userBytes) / 2 ** 20).toFixed(1)} MiB)<`);
    expect(svg).not.toContain('s3backer'); // a row that did not run has no bar
    const table = formatTable(doc);
    expect(table).toMatch(/JuiceFS, SQLite metadata \(hand, 2026-12\)\s+7099\s+1\.02×/);
    expect(table).toContain('s3backer + ext4, defaults: skipped: no s3backer');
  });

  it('--only takes products, row ids and prefixes, and refuses unknown names', () => {
    expect(selectSystems(undefined)).toEqual(SYSTEMS);
    expect(selectSystems('glidekv')).toEqual(['glidekv-upload-separated', 'glidekv-upload-inline', 'glidekv-local-separated', 'glidekv-local-inline']);
    expect(selectSystems('slatedb-1,s3backer-defaults')).toEqual(['s3backer-defaults', 'slatedb-1']);
    expect(selectSystems('glidekv-local')).toEqual(['glidekv-local-separated', 'glidekv-local-inline']);
    expect(() => selectSystems('juicefs')).toThrow(/unknown system 'juicefs'/);
    expect(() => selectSystems('slatedb-2')).toThrow(/unknown system/);
  });
});

const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');
if (!canMount) console.warn('SKIPPING the bench:peers glidekv self-check: it needs root and /dev/fuse (FUSE, loop devices, ext4)');

describe.skipIf(!canMount)('bench:peers self-check: the glidekv row alone on a file store', () => {
  const dir = mkdtempSync(join(tmpdir(), 'glidekv-peers-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs every phase, counts PUTs, and the table, JSON and SVG agree with the numbers', { timeout: 300_000 }, async () => {
    const params: WorkloadParams = { values: 1, valueSize: 256 * 1024, small: 20, smallSize: 100, rounds: 1, writers: 8 };
    const logs: string[] = [];
    const doc: PeersDoc = await runPeers({
      systems: ['glidekv-upload-separated', 's3backer-defaults'],
      quick: true,
      params,
      fileStore: `file://${join(dir, 'store')}`,
      log: (l) => logs.push(l),
    });
    expect(doc.partial).toBe(false);
    expect(doc.userBytes).toBe(userBytesOf(params));
    const [g, s] = doc.rows;
    // The peers need the run's MinIO: skipped with one line, the glidekv row still runs.
    expect(s).toMatchObject({ id: 's3backer-defaults', status: 'skipped', reason: 'needs the MinIO of the run (not a file store)' });
    expect(g.status, g.reason).toBe('ok');
    expect(g.phases.map((p) => p.name)).toEqual(['write', 'round 1', 'close']);
    for (const p of g.phases) {
      expect(p.server).toBeNull(); // a file store: glidekv's own counters
      expect(p.puts).toBe(p.client!.puts);
      expect(p.uploadedBytes).toBe(p.client!.uploadedBytes);
      if (p.userBytes > 0) expect(p.amplification).toBeCloseTo(p.uploadedBytes / p.userBytes, 9);
    }
    expect(g.phases[0].puts).toBeGreaterThan(0);
    expect(g.phases[0].userBytes).toBe(256 * 1024 + 20 * 100);
    const t = g.total!;
    expect(t.puts).toBe(g.phases.reduce((a, p) => a + p.puts, 0));
    expect(t.uploadedBytes).toBe(g.phases.reduce((a, p) => a + p.uploadedBytes, 0));
    expect(t.userBytes).toBe(doc.userBytes);
    expect(t.amplification).toBeCloseTo(t.uploadedBytes / t.userBytes, 9);
    expect(t.uploadedBytes).toBeGreaterThanOrEqual(t.userBytes); // the values reached the store at least once
    expect(g.check).toMatchObject({ server: null, client: t.puts, agree: null });

    const table = formatTable(doc);
    const totalLine = table.split('\n').find((l) => l.startsWith(g.label) && !l.includes('write'))!;
    expect(totalLine.trim().split(/\s{2,}/).slice(1, 5)).toEqual([
      String(t.puts),
      (t.uploadedBytes / 2 ** 20).toFixed(2),
      (t.userBytes / 2 ** 20).toFixed(3),
      expect.stringMatching(/×$/),
    ]);
    expect(table).toContain('s3backer + ext4, defaults: skipped: needs the MinIO of the run');
    expect(table).not.toContain('JuiceFS'); // the hand measurement is of the full workload only

    const json = JSON.parse(toJson(doc)) as PeersDoc;
    expect(json.rows[0].total!.puts).toBe(t.puts);
    expect(json.rows[0].total!.amplification).toBeCloseTo(t.amplification, 3);
    expect(json.handMeasured).toEqual([]);
    expect(Object.keys(json.versions)).toEqual(['glidekv', 'node']);

    const svg = renderPeersChart(chartInput(doc));
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain(`>${t.puts.toLocaleString('en-US')}<`);
    expect((svg.match(/<rect /g) ?? []).length).toBe(1 + 2); // background + 2 panels × the glidekv row
  });
});
