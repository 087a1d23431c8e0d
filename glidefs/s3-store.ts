/**
 * S3Store: objects in an S3 bucket (MinIO or any S3 endpoint), under an
 * optional key prefix, through @aws-sdk/client-s3.
 *
 * - Endpoint: the `endpoint` option, else the SDK's own `AWS_ENDPOINT_URL_S3`
 *   / `AWS_ENDPOINT_URL`, else AWS. Region: option, else `AWS_REGION` /
 *   `AWS_DEFAULT_REGION`, else us-east-1. Credentials: option, else the SDK's
 *   standard chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profiles, ...).
 *   Path-style addressing by default (MinIO needs it).
 * - Key `k` is the object `<prefix>/k` (no prefix: `k`).
 * - The SDK does not retry (maxAttempts 1): RetryStore is the one place that
 *   retries, so retries are counted once.
 * - Connection and request timeouts make a dead endpoint fail fast.
 * - Every SDK error is mapped to a GlideFsError (see mapS3Error). Its message
 *   names the bucket/endpoint/key, never a credential, and the SDK error itself
 *   is not kept (it holds the signed request): `cause` is a plain summary.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { GlideFsError } from './errors.js';
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, without leading/trailing '/' (they are stripped). */
  prefix?: string;
  /** e.g. http://127.0.0.1:9000. Default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (read by the SDK). */
  endpoint?: string;
  /** Default: AWS_REGION / AWS_DEFAULT_REGION / us-east-1. */
  region?: string;
  /** Default: the SDK's standard credential chain (environment variables first). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style URLs (http://host/bucket/key). Default true. */
  forcePathStyle?: boolean;
  /** TCP connect timeout, ms. Default 3000. */
  connectionTimeoutMs?: number;
  /** Whole-request timeout (and socket idle timeout), ms. Default 30000. */
  requestTimeoutMs?: number;
  /** Max parallel sockets. Default 64. */
  maxSockets?: number;
}

export class S3Store implements ObjectStore {
  readonly description: string;
  /** Where requests go, for messages: the endpoint URL without user info, or 'AWS S3 (REGION)'. */
  readonly endpoint: string;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly secrets: string[];
  private closed = false;

  constructor(opts: S3StoreOptions) {
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
    this.bucket = opts.bucket;
    this.prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.description = `s3://${this.bucket}${this.prefix ? '/' + this.prefix : ''}`;
    const region = opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
    const endpoint = opts.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    this.endpoint = endpoint ? safeEndpoint(endpoint) : `AWS S3 (${region})`;
    this.secrets = [
      opts.credentials?.secretAccessKey,
      opts.credentials?.accessKeyId,
      opts.credentials?.sessionToken,
      process.env.AWS_SECRET_ACCESS_KEY,
      process.env.AWS_ACCESS_KEY_ID,
      process.env.AWS_SESSION_TOKEN,
    ].filter((s): s is string => typeof s === 'string' && s.length >= 4);
    const connectionTimeout = opts.connectionTimeoutMs ?? 3000;
    const requestTimeout = opts.requestTimeoutMs ?? 30_000;
    this.client = new S3Client({
      region,
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      forcePathStyle: opts.forcePathStyle ?? true,
      maxAttempts: 1,
      // Block objects are verified by their blake3 key on every GET; skip the SDK's CRC work.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout,
        requestTimeout,
        throwOnRequestTimeout: true,
        socketTimeout: requestTimeout,
        httpAgent: { keepAlive: true, maxSockets: opts.maxSockets ?? 64 },
        httpsAgent: { keepAlive: true, maxSockets: opts.maxSockets ?? 64 },
      },
    });
  }

  private fullKey(key: string): string {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    checkS3Key(key);
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Body: data, ContentLength: data.byteLength }),
      );
    } catch (err) {
      throw this.mapError(err, 'put', key);
    }
  }

  /**
   * PutObject with `If-None-Match: *`: 412 PreconditionFailed = the key
   * exists (false); 409 ConditionalRequestConflict = a concurrent conditional
   * write to the key was in progress, thrown as a retryable E_CONFLICT.
   */
  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    this.checkOpen();
    checkS3Key(key);
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Body: body, ContentLength: body.byteLength, IfNoneMatch: '*' }),
      );
      return true;
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      const status = e?.$metadata?.httpStatusCode;
      if (status === 412 || e?.name === 'PreconditionFailed') return false;
      if (status === 409 || e?.name === 'ConditionalRequestConflict') {
        throw GlideFsError.CONFLICT(`conditional create of '${key}' on ${this.description} raced another (HTTP 409 ${e?.name ?? ''})`, status);
      }
      throw this.mapError(err, 'putIfAbsent', key);
    }
  }

  /**
   * PutObject with `If-Match: <etag>`: 412 PreconditionFailed (another tag)
   * and 404 (no object) = null; 409 ConditionalRequestConflict = retryable
   * E_CONFLICT. Resolves the new ETag.
   */
  async putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    this.checkOpen();
    checkS3Key(key);
    try {
      const res = await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Body: body, ContentLength: body.byteLength, IfMatch: etag }),
      );
      if (!res.ETag) throw GlideFsError.STORE(`conditional replace of '${key}' on ${this.description}: the answer has no ETag`);
      return res.ETag;
    } catch (err) {
      if (err instanceof GlideFsError) throw err;
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      const status = e?.$metadata?.httpStatusCode;
      if (status === 412 || e?.name === 'PreconditionFailed') return null;
      if (e?.name === 'NoSuchKey' || (status === 404 && e?.name !== 'NoSuchBucket')) return null;
      if (status === 409 || e?.name === 'ConditionalRequestConflict') {
        throw GlideFsError.CONFLICT(`conditional replace of '${key}' on ${this.description} raced another (HTTP 409 ${e?.name ?? ''})`, status);
      }
      throw this.mapError(err, 'putIfMatch', key);
    }
  }

  async getTagged(key: string): Promise<TaggedObject | null> {
    this.checkOpen();
    checkS3Key(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
      const bytes = res.Body ? await res.Body.transformToByteArray() : new Uint8Array(0);
      if (!res.ETag) throw GlideFsError.STORE(`get of '${key}' on ${this.description}: the answer has no ETag`);
      return { data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), etag: res.ETag };
    } catch (err) {
      if (err instanceof GlideFsError) throw err;
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e?.name === 'NoSuchKey' || (e?.name === 'NotFound' && e.$metadata?.httpStatusCode === 404)) return null;
      throw this.mapError(err, 'get', key);
    }
  }

  async head(key: string): Promise<ObjectHead | null> {
    this.checkOpen();
    checkS3Key(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
      return { size: res.ContentLength ?? 0, modifiedAt: res.LastModified?.getTime() ?? 0 };
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      // HEAD has no body: a missing key is a bare 404 ('NotFound')
      if (e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404) return null;
      throw this.mapError(err, 'head', key);
    }
  }

  async get(key: string): Promise<Buffer | null> {
    this.checkOpen();
    checkS3Key(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
      if (!res.Body) return Buffer.alloc(0);
      const bytes = await res.Body.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e?.name === 'NoSuchKey' || (e?.name === 'NotFound' && e.$metadata?.httpStatusCode === 404)) return null;
      throw this.mapError(err, 'get', key);
    }
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    checkS3Key(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
    } catch (err) {
      if ((err as { name?: string })?.name === 'NoSuchKey') return;
      throw this.mapError(err, 'delete', key);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.checkOpen();
    const full = this.fullKey(prefix);
    const strip = this.prefix ? this.prefix.length + 1 : 0;
    let token: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: full, ContinuationToken: token }),
        );
      } catch (err) {
        throw this.mapError(err, 'list', prefix);
      }
      for (const obj of page.Contents ?? []) if (obj.Key) yield obj.Key.slice(strip);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * Checks fast that the endpoint answers, the bucket exists and the
   * credentials may list it (one ListObjectsV2 of at most one key).
   */
  async probe(): Promise<void> {
    this.checkOpen();
    try {
      await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.fullKey(''), MaxKeys: 1 }));
    } catch (err) {
      throw this.mapError(err, 'probe', '');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.destroy();
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED(`store ${this.description}`);
  }

  private mapError(err: unknown, op: string, key: string): GlideFsError {
    return mapS3Error(err, { op, key, bucket: this.bucket, endpoint: this.endpoint, description: this.description, secrets: this.secrets });
  }
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN']);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT', 'ESOCKETTIMEDOUT', 'UND_ERR_SOCKET']);
const DENIED_NAMES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidToken',
  'ExpiredToken',
  'TokenRefreshRequired',
  'AllAccessDisabled',
  'CredentialsProviderError',
  'InvalidSecurity',
]);
const THROTTLE_NAMES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequests', 'RequestThrottled']);

interface MapContext {
  op: string;
  key: string;
  bucket: string;
  endpoint: string;
  description: string;
  secrets: string[];
}

/** Maps an AWS SDK / network error to a GlideFsError whose text holds no credential. */
export function mapS3Error(err: unknown, ctx: MapContext): GlideFsError {
  const e = (err ?? {}) as {
    name?: string;
    code?: string;
    message?: string;
    $fault?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const name = e.name ?? 'Error';
  const code = e.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  const status = e.$metadata?.httpStatusCode;
  const what = `${ctx.op}${ctx.key ? ` '${ctx.key}'` : ''} on ${ctx.description} at ${ctx.endpoint}`;
  const detail = redactAll(`${name}${code && code !== name ? ` ${code}` : ''}${status ? ` HTTP ${status}` : ''}: ${e.message ?? ''}`, ctx.secrets);
  const cause = new Error(detail);
  cause.name = 'S3Error';
  cause.stack = `S3Error: ${detail}`;

  if (name === 'NoSuchBucket') return GlideFsError.NO_BUCKET(ctx.bucket, cause);
  if (DENIED_NAMES.has(name) || status === 403) {
    return GlideFsError.ACCESS_DENIED(`access denied to bucket '${ctx.bucket}' at ${ctx.endpoint} (${name}) during ${ctx.op}`, cause, status);
  }
  if (name === 'TimeoutError' || name === 'RequestTimeout' || name === 'RequestTimeoutException' || code === 'ETIMEDOUT') {
    return GlideFsError.STORE_TIMEOUT(`${what} timed out`, cause);
  }
  if (code && UNREACHABLE_CODES.has(code)) return GlideFsError.STORE_UNREACHABLE(`${ctx.endpoint} (${code})`, cause);
  if (code && RESET_CODES.has(code)) {
    return GlideFsError.STORE(`${what} failed: connection ${code}`, { cause, retryable: true });
  }
  if (THROTTLE_NAMES.has(name) || status === 429 || status === 503) {
    return GlideFsError.STORE(`${what} throttled (${name}${status ? ` HTTP ${status}` : ''})`, { cause, retryable: true, status });
  }
  if ((status !== undefined && status >= 500) || name === 'InternalError' || name === 'ServiceUnavailable') {
    return GlideFsError.STORE(`${what} failed: server error ${name}${status ? ` HTTP ${status}` : ''}`, { cause, retryable: true, status });
  }
  if (status === 404 && ctx.op === 'probe') return GlideFsError.NO_BUCKET(ctx.bucket, cause);
  return GlideFsError.STORE(`${what} failed: ${detail}`, { cause, retryable: false, status });
}

function redactAll(text: string, secrets: string[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('***');
  return out;
}

/** The endpoint URL without user info, query or fragment. */
function safeEndpoint(endpoint: string): string {
  try {
    const u = new URL(endpoint);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(invalid endpoint URL)';
  }
}

function checkS3Key(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw GlideFsError.BAD_KEY(String(key), 'empty key');
  if (key.startsWith('/')) throw GlideFsError.BAD_KEY(key, 'absolute keys are not allowed');
  if (Buffer.byteLength(key) > 900) throw GlideFsError.BAD_KEY(key.slice(0, 40) + '...', 'longer than 900 bytes');
}
