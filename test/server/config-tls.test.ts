import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { CoordinatorClient } from '../../client/remote.js';
import { createCoordinatorDefinition } from '../../proto/rpc.js';
import {
  ConfigError,
  configWarnings,
  loadConfigFile,
  loadModelFile,
  modelFileJson,
  parseConfig,
  parseModelFile,
  readTlsFiles,
} from '../../server/config.js';
import { startCoordinator } from '../../server/main.js';
import { ENROLL, ScriptedClient, expectCallError, memoryLogger, toyModel } from './harness.js';

const dir = mkdtempSync(join(tmpdir(), 'subfed-config-'));
const def = createCoordinatorDefinition();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('config', () => {
  it('fills defaults for a minimal config', () => {
    const c = parseConfig({ rounds: 5, fraction: 0.1, enrollmentToken: 't' });
    expect(c).toMatchObject({
      grpc: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0, enabled: true },
      minClients: 1,
      quorum: 0.5,
      weighting: 'examples',
      training: {},
    });
    expect(c.sqlite).toBeUndefined();
  });

  it('names the field, the expectation and the value at fault', () => {
    expect(() => parseConfig({ rounds: -3, fraction: 0.1, enrollmentToken: 't' })).toThrow(
      'config: rounds: expected a positive integer, got -3',
    );
    expect(() => parseConfig({ rounds: 1, fraction: 1.5, enrollmentToken: 't' })).toThrow(
      /fraction: expected a fraction in \(0, 1\], got 1\.5/,
    );
    expect(() => parseConfig({ rounds: 1, fraction: 1, enrollmentToken: 't', weighting: 'median' })).toThrow(
      /weighting: expected "examples" or "unweighted", got "median"/,
    );
    expect(() => parseConfig({ rounds: 1, fraction: 1, enrollmentToken: 't', grpc: { port: 70000 } })).toThrow(
      /grpc\.port: expected a port number \(0\.\.65535\), got 70000/,
    );
    expect(() => parseConfig({ rounds: 1, fraction: 1 })).toThrow(
      /enrollmentToken: expected a non-empty enrollment token, got nothing/,
    );
    expect(() => parseConfig({ rounds: 1, fraction: 1, enrollmentToken: 't', colour: 1 })).toThrow(/unknown field\(s\) colour/);
  });

  it('refuses an old spelling with its new name (frac is fraction, as in subfed sim --fraction), saying each problem once', () => {
    expect(() => parseConfig({ rounds: 1, frac: 0.5, enrollmentToken: 't' })).toThrow(
      new ConfigError('config: frac: renamed to "fraction"'),
    );
    expect(() => parseConfig({ rounds: 0, frac: 0.5, enrollmentToken: 't', colour: 1 })).toThrow(
      new ConfigError(
        'config: frac: renamed to "fraction"; rounds: expected a positive integer, got 0; (root): unknown field(s) colour',
      ),
    );
    // With the new name set too, the old one is still refused.
    expect(() => parseConfig({ rounds: 1, frac: 0.5, fraction: 0.5, enrollmentToken: 't' })).toThrow(
      new ConfigError('config: frac: renamed to "fraction"'),
    );
    const path = join(dir, 'renamed.json');
    writeFileSync(path, JSON.stringify({ rounds: 1, frac: 1, enrollmentToken: 't' }));
    expect(() => loadConfigFile(path)).toThrow(new ConfigError(`${path}: frac: renamed to "fraction"`));
  });

  it('reads the liveness timeouts, with defaults, "off", and field-named errors', () => {
    const base = { rounds: 1, fraction: 1, enrollmentToken: 't' };
    expect(parseConfig(base).liveness).toEqual({ staleAfterMs: 30_000, goneAfterMs: 300_000 });
    expect(parseConfig({ ...base, liveness: 'off' }).liveness).toBe('off');
    expect(parseConfig({ ...base, liveness: { staleAfterMs: 10_000 } }).liveness).toEqual({
      staleAfterMs: 10_000,
      goneAfterMs: 300_000,
    });
    expect(parseConfig({ ...base, liveness: { staleAfterMs: 5, goneAfterMs: 6 } }).liveness).toEqual({
      staleAfterMs: 5,
      goneAfterMs: 6,
    });
    expect(() => parseConfig({ ...base, liveness: { staleAfterMs: 0 } })).toThrow(
      'config: liveness.staleAfterMs: expected a positive integer, got 0',
    );
    expect(() => parseConfig({ ...base, liveness: { goneAfterMs: 2 ** 31 } })).toThrow(
      'config: liveness.goneAfterMs: expected at most 2147483647 ms, got 2147483648',
    );
    expect(() => parseConfig({ ...base, liveness: { staleAfterMs: 60_000, goneAfterMs: 60_000 } })).toThrow(
      'config: liveness.goneAfterMs: expected more than staleAfterMs (a client is stale before it is gone), got 60000',
    );
    expect(() => parseConfig({ ...base, liveness: { staleMs: 1 } })).toThrow('config: liveness: unknown field(s) staleMs');
    expect(() => parseConfig({ ...base, liveness: 'on' })).toThrow(
      'config: liveness: expected "off" or { "staleAfterMs": ms, "goneAfterMs": ms }, got "on"',
    );
    expect(() => parseConfig({ ...base, liveness: false })).toThrow(/liveness: expected "off" or/);
  });

  it('validates the training config it sends clients with the shared strict schema', () => {
    const base = { rounds: 1, fraction: 1, enrollmentToken: 't' };
    const training = { epochs: 5, batchSize: 10, lr: 0.01, momentum: 0.5 };
    expect(parseConfig({ ...base, training }).training).toEqual(training);
    expect(parseConfig({ ...base, training: { lr: 0.1 } }).training).toEqual({ lr: 0.1 });
    // a typo is an error at start-up, not a setting silently dropped
    expect(() => parseConfig({ ...base, training: { epoch: 5 } })).toThrow('config: training: unknown field(s) epoch');
    expect(() => parseConfig({ ...base, training: { batchsize: 10 } })).toThrow(/training: unknown field\(s\) batchsize/);
    // a bad value fails here instead of crashing every client on its first task
    expect(() => parseConfig({ ...base, training: { epochs: 0 } })).toThrow(
      'config: training.epochs: expected a positive integer, got 0',
    );
    expect(() => parseConfig({ ...base, training: { epochs: 2.5 } })).toThrow(
      /training\.epochs: expected a positive integer, got 2\.5/,
    );
    expect(() => parseConfig({ ...base, training: { batchSize: -1 } })).toThrow(
      /training\.batchSize: expected a positive integer, got -1/,
    );
    expect(() => parseConfig({ ...base, training: { lr: 0 } })).toThrow(/training\.lr: expected a positive number, got 0/);
    expect(() => parseConfig({ ...base, training: { momentum: 1 } })).toThrow(
      /training\.momentum: expected a number in \[0, 1\), got 1/,
    );
    expect(() => parseConfig({ ...base, training: 'fast' })).toThrow(/training: expected a JSON object, got "fast"/);
  });

  it('warns at start-up about training.epochs 1, which every Sub-FedAvg client refuses (it cannot refuse: it does not know their algorithm)', () => {
    const base = { rounds: 1, fraction: 1, enrollmentToken: 't' };
    expect(configWarnings(parseConfig({ ...base, training: { epochs: 1 } }))).toEqual([
      'training.epochs is 1: every Sub-FedAvg client will refuse its tasks (Sub-FedAvg compares the masks after epoch 1 and the last epoch, so 1 epoch never prunes); set at least 2 unless every client runs an algorithm without pruning',
    ]);
    for (const training of [{}, { epochs: 2 }, { lr: 0.1 }])
      expect(configWarnings(parseConfig({ ...base, training }))).toEqual([]);
  });

  it('reads a config file, resolving paths next to it, and names the file on error', () => {
    const path = join(dir, 'server.json');
    writeFileSync(path, JSON.stringify({ rounds: 2, fraction: 1, enrollmentToken: 't', model: 'm.json', sqlite: 'db/state.db' }));
    const c = loadConfigFile(path);
    expect(c.model).toBe(join(dir, 'm.json'));
    expect(c.sqlite).toBe(join(dir, 'db/state.db'));
    writeFileSync(path, '{ not json');
    expect(() => loadConfigFile(path)).toThrow(new RegExp(`${path}: not valid JSON`));
    writeFileSync(path, JSON.stringify({ rounds: 0, fraction: 1, enrollmentToken: 't' }));
    expect(() => loadConfigFile(path)).toThrow(`${path}: rounds: expected a positive integer, got 0`);
    expect(() => loadConfigFile(join(dir, 'missing.json'))).toThrow(/missing\.json: cannot read config file/);
  });

  it('round-trips a model file exactly and rejects inconsistent ones', () => {
    const { manifest, initial } = toyModel();
    const path = join(dir, 'model.json');
    writeFileSync(path, modelFileJson(manifest, initial));
    const loaded = loadModelFile(path);
    expect(loaded.manifest).toEqual(manifest);
    expect(loaded.initial).toEqual(initial);
    expect(() =>
      parseModelFile({ manifest: [{ name: 'w', shape: [2], prunable: true }], values: { w: [1, 2, 3] } }, 'm.json'),
    ).toThrow('m.json: initial model: tensor "w" has 3 values, shape [2] needs 2');
    expect(() => parseModelFile({ manifest: [{ name: 'w', shape: [2], prunable: true }], values: {} }, 'm.json')).toThrow(
      'm.json: initial model: tensor "w" is missing',
    );
    expect(() => parseModelFile({ manifest: [{ name: 'w', shape: [0], prunable: true }], values: { w: [] } }, 'm.json')).toThrow(
      /manifest\.0\.shape\.0: expected a positive integer, got 0/,
    );
  });
});

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

describe.skipIf(!hasOpenssl)('TLS (self-signed certificate made with openssl)', () => {
  it('serves over TLS and refuses plaintext clients', async () => {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const server = await startCoordinator(
      { rounds: 1, fraction: 1, enrollmentToken: ENROLL, tls: { cert, key }, http: { enabled: false } },
      toyModel(),
      { logger: memoryLogger().logger },
    );
    try {
      const secure = new ScriptedClient(`localhost:${server.grpcPort}`, grpc.credentials.createSsl(readFileSync(cert)));
      await secure.join();
      expect(secure.id).toMatch(/^c\d+$/);
      const task = await secure.pull();
      expect(task.header.hasTask).toBe(true);
      secure.close();
      const plain = new ScriptedClient(`127.0.0.1:${server.grpcPort}`);
      const err = await expectCallError(() => plain.join());
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      plain.close();
    } finally {
      await server.stop();
    }
  });
});

if (!hasOpenssl) console.warn('openssl not found: the TLS test is skipped');

describe.skipIf(!hasOpenssl)('mutual TLS (tls.clientCa): the client certificate names the client', () => {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore', cwd: dir });
  /** A key and a certificate for CN=name, signed by the test CA (or self-signed when `signed` is false). */
  function clientCertificate(name: string, signed = true): { cert: Buffer; key: Buffer } {
    if (signed) {
      openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'client-ca.pem',
        '-CAkey',
        'client-ca.key',
        '-CAcreateserial',
        '-out',
        `${name}.pem`,
        '-days',
        '1',
      );
    } else {
      openssl('req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=${name}`);
    }
    return { cert: readFileSync(join(dir, `${name}.pem`)), key: readFileSync(join(dir, `${name}.key`)) };
  }

  it('records the certificate name on join, and refuses another certificate for that client, no certificate, or a foreign CA', async () => {
    openssl(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'mtls-server.key',
      '-out',
      'mtls-server.pem',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    );
    openssl(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'client-ca.key',
      '-out',
      'client-ca.pem',
      '-days',
      '1',
      '-subj',
      '/CN=subfed test client CA',
    );
    const serverCert = readFileSync(join(dir, 'mtls-server.pem'));
    const log = memoryLogger();
    const server = await startCoordinator(
      {
        rounds: 1,
        fraction: 1,
        minClients: 2,
        enrollmentToken: ENROLL,
        http: { enabled: false },
        tls: { cert: join(dir, 'mtls-server.pem'), key: join(dir, 'mtls-server.key'), clientCa: join(dir, 'client-ca.pem') },
      },
      toyModel(),
      { logger: log.logger },
    );
    const opened: ScriptedClient[] = [];
    const connect = (id?: { cert: Buffer; key: Buffer }) => {
      const c = new ScriptedClient(
        `localhost:${server.grpcPort}`,
        grpc.credentials.createSsl(serverCert, id?.key ?? null, id?.cert ?? null),
        { 'grpc.use_local_subchannel_pool': 1 },
      );
      opened.push(c);
      return c;
    };
    try {
      const alice = connect(clientCertificate('alice'));
      await alice.join(ENROLL, 10, 'not-alice');
      // The certificate names the client, whatever the request said.
      expect(server.coordinator.clientName(alice.id)).toBe('alice');
      expect((await alice.pull()).header.hasTask).toBe(false); // round 1 waits for a second client
      const before = server.coordinator.globalModel();

      // Bob, with a certificate of the same CA, holding alice's id and token.
      const bob = connect(clientCertificate('bob'));
      Object.assign(bob, { id: alice.id, token: alice.token, manifest: alice.manifest });
      for (const call of [
        () => bob.unary(def.heartbeat, bob.credentials()),
        () => bob.pull(),
        () => bob.push(1, bob.encode({})),
        () => bob.unary(def.leave, { ...bob.credentials(), reason: 'gone' }),
      ]) {
        const err = await expectCallError(call);
        expect({ code: grpc.status[err.code], details: err.details }).toEqual({
          code: 'UNAUTHENTICATED',
          details: `the client certificate names "bob", not client "${alice.id}"`,
        });
      }
      expect(log.lines().filter((l) => l.reason === 'certificate_mismatch')).toHaveLength(4);
      // No certificate, or one the client CA did not sign: the TLS handshake itself fails.
      for (const stranger of [connect(), connect(clientCertificate('mallory', false))]) {
        const err = await expectCallError(() => stranger.join());
        expect(grpc.status[err.code]).toBe('UNAVAILABLE');
      }
      // Alice is untouched (still enrolled, same model), and subfed's own client presents its certificate too.
      expect(server.coordinator.globalModel()).toEqual(before);
      const carol = CoordinatorClient.connect(`localhost:${server.grpcPort}`, {
        tls: { ca: serverCert, client: clientCertificate('carol') },
      });
      try {
        const joined = await carol.join(ENROLL, 'carol-laptop', 5);
        expect(server.coordinator.clientName(joined.clientId)).toBe('carol');
        expect(await carol.heartbeat()).toMatchObject({ currentRound: 1 });
      } finally {
        carol.close();
      }
      expect((await alice.pull()).header.hasTask).toBe(true);
    } finally {
      for (const c of opened) c.close();
      await server.stop();
    }
  });

  it('reads tls.clientCa next to the config file and names it when it cannot be read', () => {
    const path = join(dir, 'mtls.json');
    writeFileSync(
      path,
      JSON.stringify({ rounds: 1, fraction: 1, enrollmentToken: 't', tls: { cert: 'a.pem', key: 'a.key', clientCa: 'ca.pem' } }),
    );
    expect(loadConfigFile(path).tls).toEqual({
      cert: join(dir, 'a.pem'),
      key: join(dir, 'a.key'),
      clientCa: join(dir, 'ca.pem'),
    });
    expect(() => readTlsFiles({ cert: path, key: path, clientCa: join(dir, 'missing.pem') })).toThrow(
      /^tls\.clientCa: cannot read '.*missing\.pem'/,
    );
  });
});
