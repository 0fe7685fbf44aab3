#!/usr/bin/env node
// Independent gRPC server-reflection client for Strongroom daemons, built only from npm packages
// (@grpc/grpc-js + grpc-js-reflection-client), not from Strongroom's C++ code. It does what an
// operator's grpcurl would do: list services and describe one method, over mutual TLS, using the
// grpc.reflection.v1alpha.ServerReflection service (the only one gRPC C++ 1.51 serves).
//
//   node reflect.mjs --target HOST:PORT --ca CA.pem --cert C.pem --key K.pem \
//       --describe strongroom.v1.Netd.AllocatePort [--expect-spiffe spiffe://td/netd/] [--timeout-ms N]
//
// Prints exactly one JSON line on stdout and exits 0:
//   {"services":[...sorted...],"method":{"name","input_type","output_type","client_streaming",
//    "server_streaming","input_fields":[...]}}
// On any error (usage errors included) prints {"error":"..."} and exits 1.
//
// Strongroom certificates carry only a SPIFFE URI SAN (no DNS/IP SAN), so the usual hostname check
// is replaced: the chain is still verified against --ca, and the server certificate must carry a
// spiffe:// URI SAN (starting with --expect-spiffe when that is given).
import fs from 'node:fs';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { GrpcReflection } from 'grpc-js-reflection-client';

const USAGE =
  'usage: node reflect.mjs --target HOST:PORT --ca CA.pem --cert C.pem --key K.pem ' +
  '--describe FULL.METHOD.NAME [--expect-spiffe PREFIX] [--server-name NAME] [--timeout-ms N]';
const DEFAULT_TIMEOUT_MS = 15000;

let finished = false;
function finish(obj, code) {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(code));
}
function fail(message) {
  finish({ error: String(message) }, 1);
}

class UsageError extends Error {}

function parseArgs(argv) {
  const known = new Set(['target', 'ca', 'cert', 'key', 'describe', 'expect-spiffe', 'server-name', 'timeout-ms']);
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') throw new UsageError(USAGE);
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument "${a}"; ${USAGE}`);
    let name = a.slice(2);
    let value;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else {
      if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value; ${USAGE}`);
      value = argv[++i];
    }
    if (!known.has(name)) throw new UsageError(`unknown flag --${name}; ${USAGE}`);
    args[name] = value;
  }
  for (const required of ['target', 'ca', 'cert', 'key', 'describe']) {
    if (!args[required]) throw new UsageError(`--${required} is required; ${USAGE}`);
  }
  if (args['timeout-ms'] !== undefined && !/^[1-9][0-9]*$/.test(args['timeout-ms'])) {
    throw new UsageError('--timeout-ms must be a positive integer');
  }
  return args;
}

// "strongroom.v1.Netd.AllocatePort" or "strongroom.v1.Netd/AllocatePort" (also with a leading
// "/" or "."), as grpcurl accepts.
function splitMethodName(full) {
  const s = full.replace(/^[./]+/, '');
  const slash = s.lastIndexOf('/');
  const cut = slash >= 0 ? slash : s.lastIndexOf('.');
  if (cut <= 0 || cut === s.length - 1) {
    throw new UsageError(`--describe wants SERVICE.METHOD with a package-qualified service, got "${full}"`);
  }
  return { service: s.slice(0, cut), method: s.slice(cut + 1) };
}

// Node's cert.subjectaltname looks like 'URI:spiffe://td/role/name, DNS:x'; newer Node versions
// JSON-quote entries holding unusual characters ('URI:"..."').
function uriSans(cert) {
  const san = (cert && cert.subjectaltname) || '';
  const uris = [];
  for (const raw of san.split(/,\s*/)) {
    if (!raw.startsWith('URI:')) continue;
    let v = raw.slice(4);
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v);
      } catch {
        /* keep as is */
      }
    }
    uris.push(v);
  }
  return uris;
}

function makeCheckServerIdentity(expectPrefix) {
  return (_hostname, cert) => {
    const spiffe = uriSans(cert).filter((u) => u.startsWith('spiffe://'));
    if (spiffe.length === 0) {
      return new Error(`server certificate has no spiffe:// URI SAN (subjectaltname: ${cert.subjectaltname || 'none'})`);
    }
    if (expectPrefix && !spiffe.some((u) => u.startsWith(expectPrefix))) {
      return new Error(`server SPIFFE ID ${spiffe.join(', ')} does not start with ${expectPrefix}`);
    }
    return undefined;
  };
}

function readFile(flag, path) {
  try {
    return fs.readFileSync(path);
  } catch (e) {
    throw new Error(`cannot read --${flag} ${path}: ${e.message}`);
  }
}

// The library wraps a grpc-js ServiceError as new Error(err), so its message reads
// "Error: 7 PERMISSION_DENIED: details"; drop the "Error: " prefix and keep code name and details.
function errorText(e) {
  const msg = e && e.message !== undefined ? String(e.message) : String(e);
  return msg.replace(/^Error: /, '');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { service, method } = splitMethodName(args.describe);
  const timeoutMs = args['timeout-ms'] ? Number(args['timeout-ms']) : DEFAULT_TIMEOUT_MS;
  const timer = setTimeout(() => fail(`timed out after ${timeoutMs} ms talking to ${args.target}`), timeoutMs);
  timer.unref();

  const credentials = grpc.credentials.createSsl(
    readFile('ca', args.ca),
    readFile('key', args.key),
    readFile('cert', args.cert),
    { checkServerIdentity: makeCheckServerIdentity(args['expect-spiffe']) },
  );

  // TLS SNI may not be an IP address (RFC 6066; Node warns), and our certificates name no host
  // anyway: for an IP-literal target send a fixed SNI name. The identity check above ignores it.
  const channelOptions = {};
  const host = args.target.replace(/^(dns:|ipv4:|ipv6:)/, '').replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  const serverName = args['server-name'] || (net.isIP(host) ? 'strongroom' : undefined);
  if (serverName) channelOptions['grpc.ssl_target_name_override'] = serverName;

  const reflection = new GrpcReflection(args.target, credentials, channelOptions, 'v1alpha');
  const callOptions = () => ({ deadline: new Date(Date.now() + timeoutMs) });
  try {
    const services = (await reflection.listServices('*', new grpc.Metadata(), callOptions())).slice().sort();

    // As grpcurl does for "describe", ask for the file containing the method's own symbol.
    const symbol = `${service}.${method}`;
    let descriptor;
    try {
      descriptor = await reflection.getDescriptorBySymbol(symbol, new grpc.Metadata(), callOptions());
    } catch (e) {
      // A gRPC status ("7 PERMISSION_DENIED: ...") is passed on as is; a reflection-level error
      // response (C++ says just "Symbol not found.") gets the symbol it was about.
      const text = errorText(e);
      throw new Error(/^\d+ [A-Z_]+:/.test(text) ? text : `cannot describe ${symbol}: ${text}`);
    }
    const root = descriptor.getProtobufJsRoot();
    let svc;
    try {
      svc = root.lookupService(service);
    } catch {
      throw new Error(`service ${service} is not in the descriptors the server returned`);
    }
    const m = svc.methods[method];
    if (!m) throw new Error(`service ${service} has no method ${method}`);
    m.resolve();
    const strip = (n) => n.replace(/^\./, '');
    const input = m.resolvedRequestType;
    const output = m.resolvedResponseType;
    return {
      services,
      method: {
        name: `${strip(svc.fullName)}.${m.name}`,
        input_type: strip(input.fullName),
        output_type: strip(output.fullName),
        client_streaming: Boolean(m.requestStream),
        server_streaming: Boolean(m.responseStream),
        input_fields: input.fieldsArray.slice().sort((a, b) => a.id - b.id).map((f) => f.name),
      },
    };
  } finally {
    try {
      reflection.client.close();
    } catch {
      /* best effort */
    }
  }
}

main().then(
  (result) => finish(result, 0),
  (e) => fail(e instanceof UsageError ? e.message : errorText(e)),
);
