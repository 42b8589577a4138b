// proto/PROTOCOL.md against the code: its tables, examples and numbers are read
// from the document and checked here, so a change on either side that the other
// does not follow fails this suite instead of silently leaving the contract wrong.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeMask,
  decodeSparseTensor,
  decodeValues,
  encodeMaskAs,
  encodeSparseTensor,
  encodeValues,
  f32BitsToF16Bits,
} from '../../proto/codec.js';
import { Mask } from '../../proto/mask.js';
import { MaskEncoding, ValueEncoding, type ValueEncodingName } from '../../proto/messages.js';
import {
  DEFAULT_ASSEMBLY_LIMITS,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  createCoordinatorDefinition,
  isMalformed,
  messageLimitOptions,
  splitTensor,
  type JoinResponse,
  type TaskChunk,
} from '../../proto/rpc.js';
import { codecs, schemaRoot } from '../../proto/schema.js';
import { TRAINING_FIELDS } from '../../proto/training-config.js';
import { parseConfig } from '../../server/config.js';
import { CLIENT_STATES } from '../../server/liveness.js';
import { startCoordinator, uploadLimits, type CoordinatorHandle } from '../../server/main.js';
import { REPO_ROOT, backticked, blockTagged, hexBytes, namedPaths, plain, readDoc, tableAfter, toHex } from '../docs/markdown.js';

const DOC = readDoc('proto/PROTOCOL.md');

/** The numbers of a cell like "0, 3, 4, 9" (empty: none). */
const numbers = (cell: string): number[] => (cell.trim() === '' ? [] : cell.split(',').map((s) => Number(s.trim())));
/** A shape cell like "[2, 5]". */
const shapeOf = (cell: string): number[] => JSON.parse(cell) as number[];
const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Evaluates a formula cell of the limits table (`min(1048576, max(1024, M - 4096))`,
 * `9 * n + 1024`): numbers, the given variables, + - * / and parentheses, and the
 * functions min, max and ceil. A small recursive-descent parser, so no eval.
 */
function evaluate(formula: string, vars: Record<string, number>): number {
  const tokens = formula.match(/\d+(?:\.\d+)?|[A-Za-z_]\w*|[-+*/(),]/g) ?? [];
  if (tokens.join('') !== formula.replace(/\s+/g, '')) throw new Error(`not a formula: ${formula}`);
  let at = 0;
  const next = () => tokens[at++];
  const expect = (t: string) => {
    if (next() !== t) throw new Error(`formula ${formula}: expected '${t}' at token ${at}`);
  };
  const functions: Record<string, (...args: number[]) => number> = { min: Math.min, max: Math.max, ceil: Math.ceil };
  const primary = (): number => {
    const t = next();
    if (t === '(') {
      const v = expression();
      expect(')');
      return v;
    }
    if (t === '-') return -primary();
    if (/^\d/.test(t)) return Number(t);
    if (t in functions) {
      expect('(');
      const args = [expression()];
      while (tokens[at] === ',') {
        at++;
        args.push(expression());
      }
      expect(')');
      return functions[t](...args);
    }
    if (t in vars) return vars[t];
    throw new Error(`formula ${formula}: unknown '${t}'`);
  };
  const term = (): number => {
    let v = primary();
    while (tokens[at] === '*' || tokens[at] === '/') v = next() === '*' ? v * primary() : v / primary();
    return v;
  };
  const expression = (): number => {
    let v = term();
    while (tokens[at] === '+' || tokens[at] === '-') v = next() === '+' ? v + term() : v - term();
    return v;
  };
  const value = expression();
  if (at !== tokens.length) throw new Error(`formula ${formula}: unexpected '${tokens[at]}'`);
  return value;
}

describe('PROTOCOL.md: the service', () => {
  it('lists every RPC of subfed.v1.Coordinator with its messages, streaming and path', () => {
    const service = schemaRoot.lookupService('subfed.v1.Coordinator');
    const definition = createCoordinatorDefinition();
    const paths = new Map(Object.values(definition).map((m) => [m.originalName, m.path]));
    const table = tableAfter(DOC, 'rpc-table');
    const documented = table.rows.map(([rpc, request, response, path]) => ({
      name: plain(rpc),
      request: backticked(request)[0],
      requestStream: request.startsWith('stream of'),
      response: backticked(response)[0],
      responseStream: response.startsWith('stream of'),
      path: plain(path),
    }));
    const actual = Object.values(service.methods).map((m) => ({
      name: m.name,
      request: m.requestType,
      requestStream: m.requestStream === true,
      response: m.responseType,
      responseStream: m.responseStream === true,
      path: paths.get(m.name),
    }));
    expect(documented).toEqual(actual);
  });

  it('states the protocol version the code speaks', () => {
    expect(DOC).toContain(`\`PROTOCOL_VERSION\` is \`${PROTOCOL_VERSION}\``);
    expect(DOC).toMatch(new RegExp(`^# subfed wire protocol, version ${PROTOCOL_VERSION}$`, 'm'));
  });

  it('names only files that exist', () => {
    const paths = namedPaths(DOC, ['proto', 'server', 'client', 'sim', 'test']);
    expect(paths.length).toBeGreaterThan(5);
    for (const path of paths) expect(existsSync(join(REPO_ROOT, path)), path).toBe(true);
  });
});

describe('PROTOCOL.md: enums', () => {
  const enumTable = (marker: string) =>
    tableAfter(DOC, marker).rows.map(([name, number, what]) => ({ name: plain(name), number: Number(number), what }));
  const protoEnum = (name: string) => Object.entries(schemaRoot.lookupEnum(`subfed.v1.${name}`).values);

  it('the mask encodings table has every MaskEncoding value, by name and number', () => {
    const rows = enumTable('mask-encodings-table');
    expect(rows.map((r) => [r.name, r.number])).toEqual(protoEnum('MaskEncoding'));
  });

  it('the value encodings table has every ValueEncoding value, by name and number', () => {
    const rows = enumTable('value-encodings-table');
    expect(rows.map((r) => [r.name, r.number])).toEqual(protoEnum('ValueEncoding'));
  });

  it('says how many bytes each value encoding takes, and that UNSPECIFIED is refused', () => {
    const names: Record<string, ValueEncodingName> = { F32: 'f32', F16: 'f16', INT8: 'int8' };
    const values = new Float32Array([0.5, -2, 3.25]);
    for (const row of enumTable('value-encodings-table')) {
      if (row.what === 'refused') {
        expect(() => decodeValues({ encoding: row.number as ValueEncoding, data: new Uint8Array(0), scale: 0 }, 0)).toThrow();
        continue;
      }
      const part = encodeValues(values, names[row.name]);
      expect(part.encoding).toBe(row.number);
      expect(part.data.length).toBe(values.length * Number(row.what));
    }
  });

  it('FULL, UNCHANGED and PERSONAL carry no bytes, the refused encoding is refused', () => {
    const zeroBytes: string[] = [];
    for (const row of enumTable('mask-encodings-table')) {
      const part = { encoding: row.number as MaskEncoding, data: new Uint8Array(0) };
      if (row.what === 'refused') expect(() => decodeMask(part, [3])).toThrow(/unknown mask encoding 0/);
      if (row.what.startsWith('none (zero bytes)')) {
        zeroBytes.push(row.name);
        expect(() => decodeMask({ ...part, data: new Uint8Array(1) }, [3], Mask.full(3))).toThrow(/expected none/);
        // PERSONAL keeps no shared position; FULL and UNCHANGED (of a full mask) keep every one.
        const personal = row.what.includes('keeps no shared position');
        expect(decodeMask(part, [3], Mask.full(3)).keptCount).toBe(personal ? 0 : 3);
      }
    }
    expect(zeroBytes).toEqual(['FULL', 'UNCHANGED', 'PERSONAL']);
  });
});

describe('PROTOCOL.md: examples', () => {
  it('every mask example is what the codec writes, and decodes back', () => {
    const rows = tableAfter(DOC, 'mask-examples').rows;
    expect(rows.length).toBeGreaterThan(4);
    for (const [shapeCell, keptCell, previousCell, encodingCell, dataCell] of rows) {
      const shape = shapeOf(shapeCell);
      const n = product(shape);
      const mask = Mask.fromKeptIndices(n, numbers(keptCell));
      const previous = previousCell === '' ? undefined : Mask.fromKeptIndices(n, numbers(previousCell));
      const encoding = MaskEncoding[plain(encodingCell) as keyof typeof MaskEncoding];
      expect(encoding, encodingCell).toBeDefined();
      const part = encodeMaskAs(mask, shape, encoding, previous);
      expect(toHex(part.data), `${encodingCell} of ${keptCell}`).toBe(toHex(hexBytes(dataCell)));
      expect(decodeMask({ encoding, data: hexBytes(dataCell) }, shape, previous).equals(mask)).toBe(true);
    }
  });

  it('every f16 example is what the encoder gives', () => {
    const rows = tableAfter(DOC, 'f16-examples').rows;
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    for (const [value, half] of rows) {
      f[0] = Number(value);
      expect(f32BitsToF16Bits(bits[0]).toString(16).padStart(4, '0'), value).toBe(half);
    }
  });

  interface ExampleInput {
    name: string;
    shape: number[];
    kept: number[];
    values: number[];
    valueEncoding: ValueEncodingName;
  }

  const input = JSON.parse(blockTagged(DOC, 'sparse-tensor-input').body) as ExampleInput;
  const encoded = () =>
    encodeSparseTensor(
      input.name,
      { mask: Mask.fromKeptIndices(product(input.shape), input.kept), kept: Float32Array.from(input.values) },
      input.shape,
      { values: input.valueEncoding },
    );

  it('the worked SparseTensor is byte for byte what proto/codec.ts and protobuf produce', () => {
    const lines = blockTagged(DOC, 'sparse-tensor-bytes').body.split('\n');
    // Each line: hex bytes, then the annotation.
    const hex = lines.map((line) => /^\s*((?:[0-9a-f]{2}(?: |$))*)/.exec(line)?.[1] ?? '').join(' ');
    const expected = hexBytes(hex);
    const actual = codecs.SparseTensor.encode(encoded());
    expect(toHex(actual)).toBe(toHex(expected));
    expect(DOC).toContain(`The serialized\n\`SparseTensor\`, ${actual.length} bytes`);

    const decoded = codecs.SparseTensor.decode(expected);
    if (isMalformed(decoded)) throw new Error(decoded.error);
    const back = decodeSparseTensor(decoded, input.shape);
    expect([...back.mask.keptIndices()]).toEqual(input.kept);
    const scale = decoded.values?.scale ?? 0;
    for (let i = 0; i < input.values.length; i++) expect(Math.abs(back.kept[i] - input.values[i])).toBeLessThanOrEqual(scale / 2);
    expect(DOC).toContain(`\`scale\` = ${scale}`);
  });

  it('the chunking example is what splitTensor cuts', () => {
    const block = blockTagged(DOC, 'chunking-pieces');
    const chunk = Number(/chunk=(\d+)/.exec(block.info)?.[1]);
    const pieces = block.body
      .trim()
      .split('\n')
      .map((line) => {
        const m = /^index (\d+) total (\d+) data ([0-9a-f ]*)$/.exec(line.trim());
        if (m === null) throw new Error(`chunking example: cannot read '${line}'`);
        return { name: input.name, index: Number(m[1]), total: Number(m[2]), data: toHex(hexBytes(m[3])) };
      });
    const actual = splitTensor(encoded(), chunk).map((p) => ({ ...p, data: toHex(p.data) }));
    expect(pieces).toEqual(actual);
  });
});

describe('PROTOCOL.md: numbers', () => {
  const minimal = parseConfig({ rounds: 3, fraction: 0.5, enrollmentToken: 'x' });

  it('the coordinator defaults table matches the config schema', () => {
    const rows = tableAfter(DOC, 'server-defaults-table').rows;
    for (const [fieldCell, defaultCell] of rows) {
      const path = plain(fieldCell).split('.');
      if (defaultCell === 'required') {
        expect(() => parseConfig({ rounds: 3, fraction: 0.5, enrollmentToken: 'x', [path[0]]: undefined })).toThrow(
          new RegExp(`${path[0]}:`),
        );
        continue;
      }
      let value: unknown = minimal;
      for (const key of path) value = (value as Record<string, unknown>)[key];
      expect(value, fieldCell).toEqual(JSON.parse(defaultCell));
    }
  });

  it('the limits table matches the code', () => {
    const rows = new Map(tableAfter(DOC, 'limits-table').rows.map(([name, value]) => [plain(name), value]));
    const num = (name: string) => Number(rows.get(name));
    expect(num('server max message bytes')).toBe(minimal.grpc.maxMessageBytes);
    expect(num('client max message bytes')).toBe(DEFAULT_MAX_MESSAGE_BYTES);
    expect(num('client chunk bytes')).toBe(DEFAULT_CHUNK_BYTES);
    expect(num('client download pieces')).toBe(DEFAULT_ASSEMBLY_LIMITS.maxPieces);
    expect(num('client download tensor bytes')).toBe(DEFAULT_ASSEMBLY_LIMITS.maxTensorBytes);
    expect(num('client download tensors')).toBe(DEFAULT_ASSEMBLY_LIMITS.maxTensors);
    expect(num('client download total bytes')).toBe(DEFAULT_ASSEMBLY_LIMITS.maxTotalBytes);

    const formula = (name: string) => plain(rows.get(name) ?? '');
    for (const manifest of [
      [{ name: 'a', shape: [3], prunable: false }],
      [
        { name: 'w', shape: [300, 1000], prunable: true },
        { name: 'b', shape: [1000], prunable: false },
      ],
    ]) {
      const limits = uploadLimits(manifest);
      const largest = Math.max(...manifest.map((s) => product(s.shape)));
      expect(limits.maxTensorBytes).toBe(evaluate(formula('upload tensor bytes'), { n: largest }));
      expect(limits.maxPieces).toBe(evaluate(formula('upload pieces'), { n: largest }));
      const perTensor = manifest.map((s) => evaluate(formula('upload total bytes'), { n: product(s.shape) }));
      expect(limits.maxTotalBytes).toBe(perTensor.reduce((a, b) => a + b, 0));
      expect(rows.get('upload tensors')).toBe('manifest length');
      expect(limits.maxTensors).toBe(manifest.length);
    }
    // Every row is one of the above or the downlink chunk size, which the next suite measures.
    expect(rows.size).toBe(12);
  });

  it('the training fields table lists the fields of the shared schema', () => {
    const rows = tableAfter(DOC, 'training-fields-table').rows.map(([field]) => plain(field));
    expect(rows).toEqual(TRAINING_FIELDS);
  });

  it('the liveness table lists every client state', () => {
    const rows = tableAfter(DOC, 'liveness-table').rows.map(([state]) => plain(state));
    expect(rows).toEqual(CLIENT_STATES);
  });
});

describe('PROTOCOL.md: the status table', () => {
  const CODE_OF_HELPER: Record<string, string> = {
    invalid: 'INVALID_ARGUMENT',
    precondition: 'FAILED_PRECONDITION',
    unauthenticated: 'UNAUTHENTICATED',
    exhausted: 'RESOURCE_EXHAUSTED',
  };

  function sources(dir: string): { file: string; text: string }[] {
    return readdirSync(join(REPO_ROOT, dir), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts'))
      .map((f) => ({ file: `${dir}/${f}`, text: readFileSync(join(REPO_ROOT, dir, f), 'utf8') }));
  }

  /** Every refusal reason the coordinator can give, with its status code where the call site fixes it. */
  function serverReasons(): Map<string, Set<string | undefined>> {
    const reasons = new Map<string, Set<string | undefined>>();
    const add = (reason: string, code: string | undefined) => {
      if (!reasons.has(reason)) reasons.set(reason, new Set());
      reasons.get(reason)?.add(code);
    };
    for (const { file, text } of sources('server')) {
      const helperCalls = [...text.matchAll(/\b(invalid|precondition|unauthenticated|exhausted)\(\s*(['"`]?)([^'"`,)\s]*)\2/g)];
      for (const m of helperCalls) {
        // A reason that is not a literal would escape this table: fail and say where.
        expect(m[2], `${file}: ${m[0]} has no literal reason`).toBe("'");
        add(m[3], CODE_OF_HELPER[m[1]]);
      }
      for (const m of text.matchAll(/new CoordinatorError\(\s*'([A-Z_]+)',\s*'([a-z_]+)'/g)) add(m[2], m[1]);
      for (const m of text.matchAll(/\[grpc\.status\.([A-Z_]+)\]:\s*'([a-z_]+)'/g)) add(m[2], m[1]);
      for (const m of text.matchAll(/WIRE_REASON\[[^\]]+\] \?\? '([a-z_]+)'/g)) add(m[1], undefined);
      for (const m of text.matchAll(/code: grpc\.status\.([A-Z_]+),[^}]*reason: '([a-z_]+)'/g)) add(m[2], m[1]);
      for (const m of text.matchAll(/code: '([A-Z_]+)',\s*reason: '([a-z_]+)'/g)) add(m[2], m[1]);
      // Every CoordinatorError names its code and reason literally, except the helpers
      // of server/errors.ts, which pass their `reason` parameter on (their calls are read above).
      const constructed = text.match(/new CoordinatorError\(/g)?.length ?? 0;
      const literal = text.match(/new CoordinatorError\(\s*'[A-Z_]+',\s*'[a-z_]+'/g)?.length ?? 0;
      const helpers =
        file === 'server/errors.ts' ? (text.match(/new CoordinatorError\(\s*'[A-Z_]+',\s*reason,/g)?.length ?? 0) : 0;
      expect(literal + helpers, `${file}: a CoordinatorError without literal code and reason`).toBe(constructed);
    }
    return reasons;
  }

  const table = tableAfter(DOC, 'status-table');
  const documented = new Map(table.rows.map(([code, reason]) => [plain(reason), backticked(code)[0]]));

  it('has one row per reason, and every reason the coordinator gives, with its code', () => {
    expect(documented.size).toBe(table.rows.length);
    const reasons = serverReasons();
    expect(reasons.size).toBeGreaterThan(25);
    for (const [reason, codes] of reasons) {
      expect(documented.has(reason), `reason '${reason}' is missing from the status table`).toBe(true);
      for (const code of codes) if (code !== undefined) expect(documented.get(reason), reason).toBe(code);
    }
    for (const reason of documented.keys()) {
      expect(reasons.has(reason), `the status table lists '${reason}', which server/ never gives`).toBe(true);
    }
  });

  it('uses real gRPC status names', () => {
    for (const code of documented.values())
      if (code !== undefined) expect(grpc.status[code as keyof typeof grpc.status]).toBeTypeOf('number');
  });
});

describe('PROTOCOL.md: a task stream on the wire', () => {
  // A coordinator with a small message limit and a tensor larger than one piece: the
  // task stream is framed as section 6 says and cut as the limits table says.
  const maxMessageBytes = 6144;
  const manifest = [
    { name: 'big', shape: [3000], prunable: true },
    { name: 'small', shape: [3], prunable: false },
  ];
  const initial = new Map([
    ['big', Float32Array.from({ length: 3000 }, (_, i) => i / 7)],
    ['small', Float32Array.from([1, 2, 3])],
  ]);
  let server: CoordinatorHandle;
  let client: grpc.Client;
  const def = createCoordinatorDefinition();

  beforeAll(async () => {
    server = await startCoordinator(
      {
        rounds: 1,
        fraction: 1,
        enrollmentToken: 'enroll',
        grpc: { maxMessageBytes },
        http: { enabled: false },
        logLevel: 'silent',
      },
      { manifest, initial },
    );
    client = new grpc.Client(server.grpcAddress, grpc.credentials.createInsecure(), messageLimitOptions());
  });

  afterAll(async () => {
    client?.close();
    await server?.stop();
  });

  it('sends the header first, then each tensor whole in manifest order, in pieces of the documented size', async () => {
    const joined = await new Promise<JoinResponse>((resolve, reject) =>
      client.makeUnaryRequest(
        def.join.path,
        def.join.requestSerialize,
        def.join.responseDeserialize,
        { protocolVersion: PROTOCOL_VERSION, enrollmentToken: 'enroll', clientName: 'doc', numExamples: 1 },
        (err, res) =>
          err !== null || res === undefined || isMalformed(res) ? reject(err ?? new Error('no answer')) : resolve(res),
      ),
    );
    const call = client.makeServerStreamRequest(
      def.pullTask.path,
      def.pullTask.requestSerialize,
      def.pullTask.responseDeserialize,
      {
        protocolVersion: PROTOCOL_VERSION,
        clientId: joined.clientId,
        clientToken: joined.clientToken,
        maskVersion: 0,
        valueEncoding: ValueEncoding.F32,
      },
    );
    const chunks: TaskChunk[] = [];
    for await (const chunk of call as AsyncIterable<TaskChunk>) chunks.push(chunk);

    const [first, ...rest] = chunks;
    expect(first).toMatchObject({
      kind: 'header',
      header: { hasTask: true, dense: true, maskVersion: 0, tensorCount: 2, roundId: 1 },
    });
    const pieces = rest.map((c) => (c.kind === 'piece' ? c.piece : undefined));
    expect(pieces.every((p) => p !== undefined && p !== null)).toBe(true);

    const rows = new Map(tableAfter(DOC, 'limits-table').rows.map(([name, value]) => [plain(name), plain(value)]));
    const chunkBytes = evaluate(rows.get('server chunk bytes') ?? '', { M: maxMessageBytes });
    expect(chunkBytes).toBe(2048);

    // Consecutive pieces per tensor, index 0..total-1, tensors in manifest order, every slice full but the last.
    const names: string[] = [];
    for (let at = 0; at < pieces.length;) {
      const { name, total } = pieces[at]!;
      names.push(name);
      const own = pieces.slice(at, at + total);
      expect(own.map((p) => [p!.name, p!.index, p!.total])).toEqual(own.map((_, i) => [name, i, total]));
      own.forEach((p, i) => expect(p!.data.length).toBe(i < total - 1 ? chunkBytes : p!.data.length));
      expect(own[total - 1]!.data.length).toBeLessThanOrEqual(chunkBytes);
      const bytes = Buffer.concat(own.map((p) => p!.data));
      const tensor = codecs.SparseTensor.decode(bytes);
      if (isMalformed(tensor)) throw new Error(tensor.error);
      expect(tensor.mask?.encoding).toBe(MaskEncoding.FULL);
      const spec = manifest.find((s) => s.name === name)!;
      expect(decodeSparseTensor(tensor, spec.shape).kept).toEqual(initial.get(name));
      at += total;
    }
    expect(names).toEqual(manifest.map((s) => s.name));
    expect(pieces.filter((p) => p!.name === 'big').length).toBeGreaterThan(1);
  });
});
