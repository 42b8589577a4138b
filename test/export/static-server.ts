/** A static file server on 127.0.0.1 (port 0) for tests: URL path -> file on disk. */
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
};

export interface StaticServer {
  readonly url: string;
  /** Paths requested so far. */
  readonly requests: readonly string[];
  close(): Promise<void>;
}

/** Serves `routes` (URL path -> file path); anything else is a 404. */
export async function serveFiles(routes: ReadonlyMap<string, string>): Promise<StaticServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    requests.push(path);
    const file = routes.get(path);
    if (path === '/favicon.ico' && file === undefined) {
      // Browsers ask for it on their own; no content rather than a 404 in the page's console.
      res.writeHead(204).end();
      return;
    }
    if (file === undefined) {
      res.writeHead(404).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}
