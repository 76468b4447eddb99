// An MCP client, the official SDK's, given only the gateway's URL: it
// meets the 401, discovers the authorization server, registers, has the
// user approve (the fake Clerk approves at once: this follows its
// redirect) and retries with a new transport, at most maxAttempts times.
// Then initialize, tools/list and tools/call of whoami.
//
// Reads {"url", "maxAttempts", "tokens"?, "headers"?} as JSON on standard
// input: tokens the client starts with, as if from an earlier session;
// headers it sends with every MCP request. Writes on standard output one
// JSON object: each attempt to connect and how it ended, the protocol
// version negotiated, the tools, the tool's answer, the client id the
// client registered, and every HTTP exchange the SDK made (method, URL,
// status, WWW-Authenticate), in order.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

const input = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; }).on('end', () => resolve(text));
}));

const redirectUrl = 'http://127.0.0.1:9/callback'; // never opened: the approval's redirect is read, not followed

// The OAuth client's storage, in memory, as the SDK's OAuthClientProvider
// describes it.
class Provider {
  constructor(tokens) { this._tokens = tokens; }
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return { client_name: 'caddy-clerk-m2m MCP suite', redirect_uris: [redirectUrl],
      grant_types: ['authorization_code'], response_types: ['code'], token_endpoint_auth_method: 'none' };
  }
  clientInformation() { return this._client; }
  saveClientInformation(info) { this._client = info; }
  tokens() { return this._tokens; }
  saveTokens(tokens) { this._tokens = tokens; }
  redirectToAuthorization(url) { this.authorizationUrl = url; }
  saveCodeVerifier(verifier) { this._verifier = verifier; }
  codeVerifier() { return this._verifier; }
  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'verifier') this._verifier = undefined;
  }
}

const wire = [];
async function recordingFetch(url, init) {
  const res = await fetch(url, init);
  wire.push({ method: init?.method ?? 'GET', url: String(url), status: res.status,
    wwwAuthenticate: res.headers.get('www-authenticate') ?? undefined });
  return res;
}

// approve opens the authorization URL as the user's browser would, and
// returns the code the authorization server sends back.
async function approve(url) {
  const res = await fetch(url, { redirect: 'manual' });
  const back = new URL(res.headers.get('location'));
  if (back.searchParams.get('error')) throw new Error(`authorization refused: ${back.searchParams.get('error')}`);
  return back.searchParams.get('code');
}

const provider = new Provider(input.tokens);
const attempts = [];
const out = { attempts, wire };
try {
  let client, transport;
  for (let i = 0; !client; i++) {
    if (i === input.maxAttempts) throw new Error(`not connected after ${i} attempts`);
    transport = new StreamableHTTPClientTransport(new URL(input.url),
      { authProvider: provider, fetch: recordingFetch, requestInit: { headers: input.headers ?? {} } });
    const candidate = new Client({ name: 'caddy-clerk-m2m MCP suite', version: '1.0.0' });
    try {
      await candidate.connect(transport);
      attempts.push({ connected: true });
      client = candidate;
    } catch (err) {
      const attempt = { error: err.constructor.name, message: err.message };
      attempts.push(attempt);
      if (!(err instanceof UnauthorizedError) || !provider.authorizationUrl) throw err;
      attempt.authorizationUrl = String(provider.authorizationUrl);
      provider.authorizationUrl = undefined;
      await transport.finishAuth(await approve(attempt.authorizationUrl)); // the token request
      await transport.close(); // a transport that started cannot connect again
    }
  }
  out.protocolVersion = transport.protocolVersion;
  out.tools = (await client.listTools()).tools.map((tool) => tool.name);
  out.whoami = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text);
  out.clientId = provider.clientInformation()?.client_id;
  await client.close();
} catch (err) {
  out.failed = `${err.constructor.name}: ${err.message}`;
}
process.stdout.write(JSON.stringify(out) + '\n');
