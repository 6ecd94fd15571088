// A real, certified OpenID provider (the `oidc-provider` package) for the sign-in tests.
//
//   node provider.js PORT CONFIG.json
//
// Listens on 127.0.0.1:PORT (0 = a free port) with the issuer http://127.0.0.1:PORT and prints
// one JSON line on stdout once it answers: {"issuer": ..., "port": ..., "pid": ...}. Logs go to
// stderr. The configuration file (see tests/oidc_provider.py for the Python side):
//
//   {
//     "clients": [{"client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris"}],
//     "users": [{"sub", "preferred_username", "email", "name", "groups"}],
//     "id_token_claims": "sub_only" (default: the rest is served by userinfo) | "all",
//     "ttl": {"AccessToken": 60, "AuthorizationCode": 60, "IdToken": 60, "Interaction": 300,
//             "Session": 600, "Grant": 600}   (seconds; any subset)
//   }
//
// Sign-in goes through the provider's interaction flow with a page of our own: a form with a
// username field only (no password: the test decides who signs in by typing a username from
// the users table). Consent is automatic: every scope and claim the client asked for is granted.
// PKCE (S256 only, never plain) is required of every client; ID tokens are
// signed RS256 with a key generated at start; no refresh tokens; RP-initiated logout is on.
//
// oidc-provider 8.x (package.json): it supports Node.js 18 LTS and later, so the Node.js 20 of
// our machines and Debian's nodejs package both run it. 9.x wants Node.js 22 LTS (it warns
// "Unsupported runtime" on 20) and calls crypto.hash and URL.parse, which Node.js 18 lacks.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';

const [major] = process.versions.node.split('.').map(Number);
if (major < 18) {
  process.stderr.write(`oidc-provider 8 needs Node.js >= 18; this is ${process.version}\n`);
  process.exit(2);
}

let Provider;
try {
  ({ Provider } = await import('oidc-provider'));
} catch (err) {
  process.stderr.write(
    `cannot load oidc-provider (${err.message}); run \`npm ci --prefix tests/oidc_provider\`\n`,
  );
  process.exit(2);
}

const [portArg, configPath] = process.argv.slice(2);
if (portArg === undefined || configPath === undefined) {
  process.stderr.write('usage: node provider.js PORT CONFIG.json\n');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const users = config.users ?? [];
const byUsername = new Map(users.map((u) => [u.preferred_username, u]));
const bySub = new Map(users.map((u) => [String(u.sub ?? u.accountId), u]));

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><h1>${escapeHtml(title)}</h1>
${body}
</body></html>`;
}

// The ID token's signing key: a fresh RSA key per run (RS256).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  use: 'sig',
  alg: 'RS256',
};

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(portArg), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: (config.clients ?? []).map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    post_logout_redirect_uris: c.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  })),
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // true: the ID token carries sub (and the protocol claims) only, the scopes' claims are
  // served by userinfo; false: everything granted goes into the ID token as well.
  conformIdTokenClaims: (config.id_token_claims ?? 'sub_only') !== 'all',
  pkce: { methods: ['S256'], required: () => true },
  features: {
    devInteractions: { enabled: false },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page(
          'Sign out',
          `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Sign out</button>`,
        );
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<p>You are signed out.</p>');
      },
    },
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    ...(config.ttl ?? {}),
  },
  interactions: {
    url: async (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  async findAccount(ctx, id) {
    const user = bySub.get(String(id));
    if (!user) return undefined;
    return {
      accountId: String(id),
      async claims() {
        const claims = { sub: String(id) };
        for (const name of ['preferred_username', 'email', 'name', 'groups']) {
          if (user[name] !== undefined) claims[name] = user[name];
        }
        if (user.email !== undefined) claims.email_verified = user.email_verified ?? true;
        return claims;
      },
    };
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${escapeHtml(JSON.stringify(out))}</pre>`);
  },
});

for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error']) {
  provider.on(event, (...args) => {
    const err = args.find((a) => a instanceof Error);
    process.stderr.write(`${event}: ${err ? `${err.name}: ${err.message}` : ''}\n`);
  });
}

function loginForm(uid, error) {
  return page(
    'Sign in',
    `${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>Username <input type="text" name="username" autofocus></label>
<button type="submit">Sign in</button>
</form>`,
  );
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, body) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(body);
}

// Grants everything the client asked for (the consent prompt, answered yes).
async function consent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const savedId = await grant.save();
  const result = grantId ? { consent: {} } : { consent: { grantId: savedId } };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function interaction(req, res, url) {
  const match = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return false;
  const [, uid, login] = match;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p>interaction mismatch</p>'));
    return true;
  }
  if (req.method === 'GET' && !login) {
    if (details.prompt.name === 'login') send(res, 200, loginForm(uid));
    else if (details.prompt.name === 'consent') await consent(req, res, details);
    else send(res, 400, page('Error', `<p>unknown prompt ${escapeHtml(details.prompt.name)}</p>`));
    return true;
  }
  if (req.method === 'POST' && login) {
    const username = ((await readForm(req)).get('username') ?? '').trim();
    const user = byUsername.get(username);
    if (!user) {
      send(res, 200, loginForm(uid, `unknown user: ${username}`));
      return true;
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: String(user.sub ?? user.accountId) } },
      { mergeWithLastSubmission: false },
    );
    return true;
  }
  send(res, 405, page('Error', '<p>method not allowed</p>'));
  return true;
}

const providerCallback = provider.callback();
server.on('request', async (req, res) => {
  const url = new URL(req.url, issuer);
  try {
    if (await interaction(req, res, url)) return;
  } catch (err) {
    process.stderr.write(`interaction: ${err.name}: ${err.message}\n`);
    if (!res.headersSent) send(res, 400, page('Error', `<pre>${escapeHtml(err.message)}</pre>`));
    return;
  }
  providerCallback(req, res);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
process.stdout.write(`${JSON.stringify({ issuer, port, pid: process.pid })}\n`);
