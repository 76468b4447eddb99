// Drives Clerk's @clerk/mcp-tools, for the comparison with the module.
//
// Reads {"documents": [{"publishableKey", "resource"}], "site"} as JSON on
// standard input. For each document, the protected resource metadata
// mcp-tools generates for that key and resource
// (generateClerkProtectedResourceMetadata). For site (the URL of an MCP
// server), the answers of mcp-tools' Hono adapter, as its README sets it
// up: its mcpAuth middleware on the MCP route (with a verifier that
// refuses every token) and its metadata handler at
// /.well-known/oauth-protected-resource and below; with
// CLERK_PUBLISHABLE_KEY set to the first document's key. Requests are
// made in process (Hono's app.request): nothing reaches the network.
// Writes {"version", "documents": [...], "answers": {...}} on standard
// output.
import { readFileSync } from 'node:fs';
import { Hono } from 'hono';
import { generateClerkProtectedResourceMetadata } from '@clerk/mcp-tools/server';
import { mcpAuth, protectedResourceHandlerClerk } from '@clerk/mcp-tools/hono';

globalThis.fetch = async (url) => { throw new Error(`no network in this comparison: fetch ${url}`); };

const input = JSON.parse(readFileSync(0, 'utf8'));
const version = JSON.parse(readFileSync(new URL('./node_modules/@clerk/mcp-tools/package.json', import.meta.url), 'utf8')).version;

const documents = input.documents.map(({ publishableKey, resource }) =>
  generateClerkProtectedResourceMetadata({ publishableKey, resourceUrl: resource }));

process.env.CLERK_PUBLISHABLE_KEY = input.documents[0].publishableKey;
const app = new Hono();
app.get('/.well-known/oauth-protected-resource', protectedResourceHandlerClerk());
app.get('/.well-known/oauth-protected-resource/*', protectedResourceHandlerClerk());
app.post('/mcp', mcpAuth(async () => undefined), (c) => c.text('through'));

async function answer(path, init) {
  const res = await app.request(new URL(path, input.site).href, init);
  return { status: res.status, wwwAuthenticate: res.headers.get('www-authenticate') ?? undefined, body: await res.text() };
}

const site = new URL(input.site);
const answers = {
  noToken: await answer(site.pathname, { method: 'POST' }),
  refusedToken: await answer(site.pathname, { method: 'POST', headers: { Authorization: 'Bearer oat_refused' } }),
  metadataAtRoot: await answer('/.well-known/oauth-protected-resource'),
  metadataAtPath: await answer('/.well-known/oauth-protected-resource' + site.pathname),
};
process.stdout.write(JSON.stringify({ version, documents, answers }) + '\n');
