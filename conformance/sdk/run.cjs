// Drives Clerk's own SDK, @clerk/backend, over the conformance corpus.
//
// Reads {"apiUrl", "cases": [...], "mints": [...]} as JSON on standard
// input and writes {"sdkVersion", "results": [...], "mints": [...]} as JSON
// on standard output. Each case is one request, authenticated the way a
// Clerk user's server does it: createClerkClient(keys).authenticateRequest(
// request, options). The verdict is the request state's, refined by
// toAuth() (which treats pending sessions as signed out); the identity is
// read from the auth object and, for machine credentials, from the SDK's
// verification result. Each mint is one m2m.createToken call.
//
// Nothing here may reach the network but the fake Clerk at apiUrl: every
// other fetch fails the run.
'use strict';

const { createClerkClient } = require('@clerk/backend');
const { verifyMachineAuthToken } = require('@clerk/backend/internal');
const sdkVersion = require('@clerk/backend/package.json').version;

const REGISTERED_CLAIMS = ['iss', 'sub', 'exp', 'nbf', 'iat', 'jti'];
const JWT_FORM = /^[a-zA-Z0-9\-_]+\.[a-zA-Z0-9\-_]+\.[a-zA-Z0-9\-_]+$/;

async function main() {
  const input = JSON.parse(await readStdin());
  guardNetwork(input.apiUrl);
  const results = [];
  for (const c of input.cases) {
    results.push(await runCase(input.apiUrl, c));
  }
  const mints = [];
  for (const m of input.mints || []) {
    mints.push(await runMint(input.apiUrl, m));
  }
  process.stdout.write(JSON.stringify({ sdkVersion, results, mints }));
}

async function runMint(apiUrl, m) {
  try {
    await createClerkClient({ apiUrl, telemetry: { disabled: true } }).m2m.createToken(m.params);
    return { id: m.id, ok: true };
  } catch (err) {
    return { id: m.id, ok: false, message: String(err && err.message) };
  }
}

// guardNetwork makes any fetch to another origin than the fake Clerk's an
// error, so that the suite never depends on (or talks to) the internet.
function guardNetwork(apiUrl) {
  const allowed = new URL(apiUrl).origin;
  const realFetch = globalThis.fetch;
  globalThis.fetch = (resource, init) => {
    const url = new URL(typeof resource === 'string' ? resource : resource.url);
    if (url.origin !== allowed) {
      throw new Error(`the SDK tried to reach ${url.origin}, which is not the fake Clerk`);
    }
    return realFetch(resource, init);
  };
}

// runCase authenticates one request. Whatever throws (a configuration the
// SDK rejects, or an answer it cannot read) is a refusal: a server built on
// the SDK would answer 500.
async function runCase(apiUrl, c) {
  const keys = { ...c.keys, apiUrl, telemetry: { disabled: true } };
  const request = new Request('http://gateway.example.test/conformance', { headers: asNodeReceives(c.headers || []) });
  try {
    const state = await createClerkClient(keys).authenticateRequest(request, c.options);
    const result = { id: c.id, status: state.status, reason: state.reason || '', message: state.message || '' };
    if (state.status !== 'signed-in') {
      return { ...result, accepted: false };
    }
    const auth = state.toAuth();
    if (!auth || !auth.isAuthenticated) {
      return { ...result, accepted: false, reason: 'signed in, but toAuth() is signed out (a pending session)' };
    }
    const identity = state.tokenType === 'session_token'
      ? sessionIdentity(auth, state.token)
      : await machineIdentity(auth, state.tokenType, state.token, { ...keys, ...c.options });
    return { ...result, accepted: true, identity };
  } catch (err) {
    return { id: c.id, accepted: false, status: 'threw', reason: '', message: String(err && err.message) };
  }
}

// asNodeReceives gathers request headers the way Node's HTTP server hands
// them to the frameworks that call the SDK: a repeated Authorization header
// is dropped (the first one counts) and repeated Cookie headers are joined
// with "; ".
function asNodeReceives(pairs) {
  const headers = new Headers();
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    if (!headers.has(key)) {
      headers.set(key, value);
    } else if (key === 'cookie') {
      headers.set(key, `${headers.get(key)}; ${value}`);
    } else if (key !== 'authorization') {
      headers.append(key, value);
    }
  }
  return headers;
}

// sessionIdentity reads a session's auth object. The SDK exposes the whole
// payload as sessionClaims; the registered claims, which have places of
// their own, are left out as the gateway leaves them out.
function sessionIdentity(auth, token) {
  const claims = auth.sessionClaims;
  return {
    token_type: 'session_token',
    token_format: formatOf(token),
    id: text(auth.userId),
    token_id: text(claims.jti),
    scopes: '',
    claims: customClaims(claims),
    expires_at: seconds(claims.exp),
    session_id: text(auth.sessionId),
    org_id: text(auth.orgId),
    client_id: '',
    name: '',
    actor: actorOf(auth.actor),
  };
}

// machineIdentity reads a machine credential's auth object, and the SDK's
// verification result for what the auth object leaves out (expiry, actor).
// Verifying again asks Clerk again for an opaque token: the same request.
async function machineIdentity(auth, tokenType, token, options) {
  const { data, errors } = await verifyMachineAuthToken(token, options);
  if (errors) {
    throw new Error(`verifying again failed: ${errors[0].message}`);
  }
  return {
    token_type: tokenType,
    token_format: formatOf(token),
    id: text(auth.subject),
    token_id: text(auth.id),
    scopes: Array.isArray(auth.scopes) ? auth.scopes.join(' ') : text(auth.scopes),
    claims: tokenType === 'oauth_token' ? null : (auth.claims ?? {}),
    expires_at: data.expiration == null ? '' : seconds(data.expiration / 1000),
    session_id: '',
    org_id: text(auth.orgId),
    client_id: text(auth.clientId),
    name: text(auth.name),
    actor: actorOf(data.act),
  };
}

// customClaims copies the payload's members as members (fromEntries
// defines them): assigning one named __proto__ would set the copy's
// prototype instead, and lose the claim.
function customClaims(payload) {
  return Object.fromEntries(Object.entries(payload).filter(([name]) => !REGISTERED_CLAIMS.includes(name)));
}

function actorOf(act) {
  return act && typeof act === 'object' && typeof act.sub === 'string' ? act.sub : '';
}

function formatOf(token) {
  return JWT_FORM.test(token) ? 'jwt' : 'opaque';
}

function seconds(value) {
  return typeof value === 'number' && Number.isFinite(value) ? String(Math.floor(value)) : '';
}

function text(value) {
  return value == null ? '' : String(value);
}

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on('data', (chunk) => chunks.push(chunk));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
