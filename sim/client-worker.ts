/**
 * A simulator worker thread: hosts some clients (client i lives on worker
 * i % W), each a Participant with its own model and, unless local-only, its
 * own CoordinatorClient on a real gRPC channel to the in-process coordinator.
 * The datasets arrive once, in SharedArrayBuffers (workerData); each client's
 * slice is copied out when it is hosted.
 */
import { workerData } from 'node:worker_threads';
import { initBackend } from '../client/backend.js';
import { subset } from '../client/data/dataset.js';
import { deriveSeed } from '../proto/random.js';
import { join } from 'node:path';
import { createModel, zooArchitecture, type Model } from '../client/model.js';
import type { ModelName } from '../client/model-names.js';
import { compactModel } from '../client/export/compact.js';
import { accuracyOf } from '../client/export/export.js';
import { encodeExport, exportBytes, writeExport } from '../client/export/files.js';
import {
  inputEncodingOf,
  keptParameterTotal,
  layerWidths,
  parameterTotal,
  type PortableModel,
} from '../client/export/portable.js';
import { saveState } from '../client/state.js';
import {
  createParticipant,
  type FederatedParticipant,
  type Participant,
  type ReceivedTask,
  type RoundMetrics,
} from '../client/participant.js';
import { CoordinatorClient, type OutgoingTensor } from '../client/remote.js';
import { trainOnTask } from '../client/federated-round.js';
import { evaluate } from '../client/train.js';
import { serveWorkerRequests } from './pool.js';
import { algorithmConfig, attackers, modelFor } from './presets.js';
import type { InitialModel } from '../server/config.js';
import type {
  ClientEvaluation,
  ClientExport,
  MemberResult,
  ModelEvaluation,
  WorkerRequest,
  WorkerResponses,
  WorkerSetup,
} from './worker-protocol.js';

const setup = workerData as WorkerSetup;
const config = setup.config;
const backendReady = initBackend(config.backend, { logger: { info: () => {} } });

interface HostedClient {
  readonly participant: Participant;
  /** A federated client's connection, from its join on. */
  remote?: CoordinatorClient;
}

const hosted = new Map<number, HostedClient>();
/** One scratch model per architecture for evaluating a given (global) model. */
const scratch = new Map<ModelName, Model>();

function hostedClient(client: number): HostedClient {
  const h = hosted.get(client);
  if (!h) throw new Error(`client ${client} is not hosted on this worker`);
  return h;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function memberResult(client: number, metrics: RoundMetrics, receivedSparsity: number, received: boolean): MemberResult {
  return {
    client,
    received: received ? { accuracy: metrics.receivedAccuracy, loss: metrics.receivedLoss } : null,
    personalized: { accuracy: metrics.accuracy, loss: metrics.testLoss },
    sparsity: metrics.sparsity,
    receivedSparsity,
    channelsKept: metrics.channelsKept ?? null,
  };
}

/** Pull (waiting while the round is not open for us), train, push. */
async function federatedRound(
  client: number,
  p: FederatedParticipant,
  remote: CoordinatorClient,
  round: number,
): Promise<MemberResult> {
  const task = await pullUntilTask(client, remote, p, round);
  if (task.round !== round) {
    throw new Error(`client ${client}: expected a task for round ${round}, the coordinator sent round ${task.round}`);
  }
  const trained = await trainOnTask(p, task);
  const tensors = malicious.has(client) ? signFlipped(trained.upload.tensors) : trained.upload.tensors;
  const ack = await remote.pushUpdate(trained.upload.fields, tensors);
  if (!ack.accepted) throw new Error(`client ${client}: round ${round} update refused: ${ack.message}`);
  return memberResult(client, trained.metrics, trained.receivedSparsity, true);
}

/** A hosted client's round: federated (pull, train, push) or local. */
async function trainRound(client: number, round: number): Promise<MemberResult> {
  const { participant: p, remote } = hostedClient(client);
  switch (p.kind) {
    case 'federated':
      // The driver joins every federated client before its first round.
      if (remote === undefined) throw new Error(`client ${client} trains before it joined`);
      return federatedRound(client, p, remote, round);
    case 'local': {
      const before = p.sparsity;
      const result = await p.localRound();
      return memberResult(client, result.metrics, before, false);
    }
  }
}

/** The clients that attack (SimConfig.attack, an attack simulation); empty for an honest run. */
const malicious = attackers(config);

/** The upload of a sign-flipping attacker: every delta times -scale, masks as trained. */
function signFlipped(tensors: ReadonlyMap<string, OutgoingTensor>): ReadonlyMap<string, OutgoingTensor> {
  const scale = -(config.attack?.scale ?? 1);
  return new Map(
    [...tensors].map(([name, t]) => [name, t.kind === 'personal' ? t : { ...t, kept: t.kept.map((x) => x * scale) }]),
  );
}

async function pullUntilTask(
  client: number,
  remote: CoordinatorClient,
  p: FederatedParticipant,
  round: number,
): Promise<ReceivedTask> {
  for (;;) {
    const pulled = await remote.pullTask(p.maskVersion, p.wireMasks);
    switch (pulled.kind) {
      case 'task':
        return pulled.task;
      case 'wait':
        await sleep(pulled.retryAfterMs);
        break;
      case 'finished':
        // The driver asks only for the configured rounds, so this means the two disagree.
        throw new Error(
          `client ${client}: expected a task for round ${round}, the coordinator finished training after round ${pulled.lastRound}`,
        );
    }
  }
}

async function handle(request: WorkerRequest): Promise<WorkerResponses[keyof WorkerResponses]> {
  const backend = await backendReady;
  switch (request.kind) {
    case 'backend':
      return backend;
    case 'initial-model': {
      const model = createModel(request.model, request.seed);
      const result: InitialModel = {
        manifest: model.manifest.map((s) => ({ name: s.name, shape: [...s.shape], prunable: s.prunable })),
        initial: model.getWeights(),
      };
      model.dispose();
      return result;
    }
    case 'host': {
      const participant = createParticipant({
        model: createModel(modelFor(config, request.algorithm), config.seed),
        algorithm: request.algorithm,
        config: algorithmConfig(config, request.algorithm),
        train: subset(setup.train, request.train, `client ${request.client} train`),
        test: subset(setup.test, request.test, `client ${request.client} test`),
        seed: deriveSeed(config.seed, request.client),
      });
      hosted.set(request.client, { participant });
      return null;
    }
    case 'join': {
      const h = hostedClient(request.client);
      const remote = CoordinatorClient.connect(request.address, { valueEncoding: config.values });
      h.remote = remote;
      const { clientId } = await remote.join(request.enrollmentToken, `sim-client-${request.client}`, h.participant.numExamples);
      return { clientId };
    }
    case 'train': {
      return trainRound(request.client, request.round);
    }
    case 'evaluate': {
      const out: ClientEvaluation[] = [];
      const withTrain = new Set(request.withTrain);
      for (const client of request.clients) {
        const p = hostedClient(client).participant;
        out.push({ client, test: await p.evaluate('test'), train: withTrain.has(client) ? await p.evaluate('train') : null });
      }
      return out;
    }
    case 'evaluate-model': {
      const out: ModelEvaluation[] = [];
      for (const client of request.clients) {
        const p = hostedClient(client).participant;
        let model = scratch.get(p.model.name);
        if (!model) {
          model = createModel(p.model.name, config.seed);
          scratch.set(p.model.name, model);
        }
        model.setWeights(request.weights);
        out.push({ client, test: evaluate(model, p.data.test) });
      }
      return out;
    }
    case 'export': {
      const out: ClientExport[] = [];
      for (const client of request.clients) out.push(await exportClient(client, hostedClient(client).participant, request.dir));
      return out;
    }
    case 'release':
      release();
      return null;
  }
}

/** subfed export of one hosted client: its state and its compact model, under dir/client-<id>/. */
async function exportClient(client: number, p: Participant, dir: string): Promise<ClientExport> {
  const s = p.exportState();
  const family = p.model.name;
  const input = inputEncodingOf(p.data.train);
  // What the client's personalized accuracy is measured on (Ditto: its personal model, not the uploaded one).
  const personalized = p.algorithm.personalizedModel({ weights: s.weights, personal: s.personal });
  const portable: PortableModel = {
    family,
    architecture: zooArchitecture(family),
    weights: personalized.weights,
    personal: personalized.personal,
    masks: s.masks,
    input,
  };
  const clientDir = join(dir, `client-${client}`);
  const state = { round: s.round, maskVersion: s.maskVersion, algorithm: p.algorithm.name, model: family, input };
  await saveState(clientDir, {
    ...state,
    identity: undefined,
    weights: s.weights,
    masks: s.masks,
    personal: s.personal,
    algorithmState: s.algorithmState,
  });
  const { model: compact } = compactModel(portable);
  const origin = `${p.algorithm.name} simulated client ${client} after round ${s.round}, compact`;
  const written = await writeExport(join(clientDir, 'model'), compact, { format: 'layers', quantization: 'f32', origin });
  const masked = exportBytes(encodeExport(portable, { format: 'layers', quantization: 'f32', origin }).files);
  return {
    client,
    dir: written.dir,
    bytes: written.bytes,
    maskedBytes: masked,
    parameters: parameterTotal(compact),
    keptParameters: keptParameterTotal(portable),
    widths: layerWidths(compact.architecture),
    accuracy: accuracyOf(compact, p.data.test),
  };
}

function release(): void {
  for (const h of hosted.values()) {
    h.remote?.close();
    h.participant.model.dispose();
  }
  hosted.clear();
  for (const model of scratch.values()) model.dispose();
  scratch.clear();
}

serveWorkerRequests(handle, () => Promise.resolve(release()));
