// An MCP server with no auth code at all: the official SDK's Streamable
// HTTP transport, stateless, at /mcp, on 127.0.0.1:$PORT. Its one tool,
// whoami, answers with the request headers Caddy hands on: the caller's
// identity (X-Clerk-*) and whether a credential reached it.
import http from 'node:http';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

function newServer() {
  const server = new McpServer({ name: 'whoami', version: '1.0.0' });
  server.registerTool('whoami', { description: 'Who the gateway says the caller is' }, async (extra) => {
    const headers = extra.requestInfo?.headers ?? {}; // names in lower case
    const clerk = Object.fromEntries(Object.entries(headers).filter(([name]) => name.startsWith('x-clerk-')));
    const seen = { clerk, authorization: 'authorization' in headers };
    return { content: [{ type: 'text', text: JSON.stringify(seen) }] };
  });
  return server;
}

const port = Number(process.env.PORT);
http.createServer(async (req, res) => {
  if (new URL(req.url, 'http://upstream').pathname !== '/mcp') {
    res.writeHead(404).end();
    return;
  }
  if (req.method !== 'POST') { // stateless: no stream to GET, no session to DELETE
    res.writeHead(405, { Allow: 'POST' }).end();
    return;
  }
  // Stateless: a server and a transport for each request.
  const server = newServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on('close', () => { transport.close(); server.close(); });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    if (!res.headersSent) res.writeHead(500).end(String(err));
  }
}).listen(port, '127.0.0.1', () => process.stdout.write(`listening on ${port}\n`));
