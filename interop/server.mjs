// A real authorization server for tower-token-refresh's interop test:
// oidc-provider (https://github.com/panva/node-oidc-provider), configured
// with refresh token rotation, client_credentials, introspection and
// revocation, and short access tokens. Listens on 127.0.0.1:$PORT (0 picks a
// free port) and prints one line `LISTENING <issuer>` once ready.
//
// Beside the provider's own endpoints it serves, for the test only:
// - POST /test/login: mints a grant and a refresh token for a test user,
//   as the end of an authorization_code flow would (the flow itself needs a
//   browser). Answers {"refresh_token": "..."}.
// - GET /test/stats: counters kept from the provider's own events
//   (grant.success per grant_type, grant.error, revocations...).
// - GET /api/data: a protected resource that validates the bearer token
//   with the provider's own token model (RFC 6750 challenges on failure).
//
// Logins (wt-logins): public and confidential native clients with PKCE, a
// loopback redirect (any port, RFC 8252 §7.3) and the device flow; see the
// LOGINS blocks below and crates/oauth2/tests/interop_logins.rs. The
// native client `interop-native-silent` may also log in silently
// (prompt=none) while its user has a session.
// DPoP (RFC 9449), for crates/test-util/tests/interop_dpop.rs: the public
// client `interop-dpop-client` must use DPoP-bound tokens, the token
// endpoint wants a DPoP nonce, and beside it:
// - POST /test/dpop/login?jkt=<thumbprint>: a refresh token bound to that
//   key, as a DPoP login would leave it.
// - GET /test/dpop/stats: DPoP counters (nonce challenges at the token
//   endpoint and at the resource, resource answers).
// - GET /dpop/api/data: a resource that takes only DPoP-bound tokens and
//   checks each proof (signature, typ, htm, htu, iat, ath, jti replay, the
//   token's jkt, its own nonce, which it changes every ACCESS_TTL seconds).
//
// Usage: PORT=0 ACCESS_TTL=2 node server.mjs
//
// Signed client assertions (see the block "Signed client assertions"
// below): with ASSERTION_JWKS set, two more clients authenticate with
// private_key_jwt and client_secret_jwt, and POST /test/assertions/login
// mints a refresh token for either.
//
// MCP (crates/oauth2/tests/interop_mcp.rs, interop_logins.rs): open dynamic client
// registration (RFC 7591) at /reg, and one RFC 8707 resource,
// `<issuer>/mcp`, whose tokens are opaque with scope `api`; any other
// `resource` is refused with invalid_target. Requests without `resource`
// are as before.

import crypto from 'node:crypto';
import http from 'node:http';

import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } from 'jose';
import Provider, { errors, interactionPolicy } from 'oidc-provider';

const port = Number(process.env.PORT ?? 0);
const accessTtl = Number(process.env.ACCESS_TTL ?? 2);
const clientId = process.env.CLIENT_ID ?? 'interop-client';
const clientSecret = process.env.CLIENT_SECRET ?? 'interop-secret';

// ---- LOGINS (wt-logins): clients and test-only interaction --------------
// Native apps logging a user in: a public client (no secret) and a
// confidential one, both with PKCE and a loopback redirect whose port the
// app picks, both allowed the device flow.
const silentClientId = 'interop-native-silent';
const loginGrantTypes = [
  'authorization_code',
  'refresh_token',
  'urn:ietf:params:oauth:grant-type:device_code',
];
const loginClients = [
  {
    client_id: 'interop-native',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: loginGrantTypes,
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    scope: 'openid offline_access api',
  },
  {
    client_id: 'interop-native-confidential',
    client_secret: 'interop-native-secret',
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: loginGrantTypes,
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    scope: 'openid offline_access api',
  },
  // Silent logins (prompt=none, crates/oauth2/tests/interop_logins.rs):
  // oidc-provider asks every native client for consent at each login
  // (its `native_client_prompt` check, after RFC 8252 §8.6: anyone can
  // claim a public client's id), so prompt=none never succeeds for one.
  // This client is exempt from that check only (see `policy` below): with
  // a session and a grant covering the scopes, it gets a code silently.
  {
    client_id: silentClientId,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: loginGrantTypes,
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    scope: 'openid offline_access api',
  },
];
// The default interaction policy, but for the silent-login client's
// exemption from `native_client_prompt`.
const policy = interactionPolicy.base();
const nativeClientPrompt = policy.get('consent').checks.get('native_client_prompt');
const askNativeClients = nativeClientPrompt.check;
nativeClientPrompt.check = (ctx) => (ctx.oidc.client.clientId === silentClientId
  ? interactionPolicy.Check.NO_NEED_TO_PROMPT
  : askNativeClients(ctx));
// What the last interaction was asked for (GET /test/logins).
const loginStats = {
  interactions: 0,
  denied: 0,
  authorization_code_grants: 0,
  device_code_grants: 0,
  last_acr_values: null,
  last_max_age: null,
};
// ---- end LOGINS ------------------------------------------------------------

// ---- Signed client assertions (crates/oauth2/tests/interop_assertions.rs) ----
// ASSERTION_JWKS: the public JWK set (JSON) of the private_key_jwt client's
// key; ASSERTION_SECRET: the client_secret_jwt client's secret (HS256 wants
// 32 bytes or more).
const assertionJwks = process.env.ASSERTION_JWKS ? JSON.parse(process.env.ASSERTION_JWKS) : null;
const assertionClient = (clientId, auth) => ({
  client_id: clientId,
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
  scope: 'openid offline_access api',
  ...auth,
});
const assertionClients = assertionJwks ? [
  assertionClient('interop-private-key-jwt', {
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: assertionJwks,
  }),
  assertionClient('interop-client-secret-jwt', {
    token_endpoint_auth_method: 'client_secret_jwt',
    client_secret: process.env.ASSERTION_SECRET ?? 'interop-client-secret-jwt-secret-of-32-bytes-or-more',
  }),
] : [];
const assertionClientIds = new Set(assertionClients.map((c) => c.client_id));
// ---- end of signed client assertions ----

const stats = {
  refresh_token_grants: 0,
  client_credentials_grants: 0,
  grant_errors: 0,
  introspections: 0,
  revocations: 0,
  api_ok: 0,
  api_rejected: 0,
};

async function main() {
  // Bind first so the issuer carries the real port.
  const server = http.createServer();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        token_endpoint_auth_method: 'client_secret_basic',
        scope: 'openid offline_access api',
      },
      ...loginClients,
      ...assertionClients,
      // DPoP: a public client whose tokens are all DPoP-bound.
      {
        client_id: 'interop-dpop-client',
        // A native app: its loopback redirect may take any port (RFC 8252
        // §7.3), for the DPoP-bound login of interop_logins.rs.
        application_type: 'native',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        token_endpoint_auth_method: 'none',
        dpop_bound_access_tokens: true,
        scope: 'openid offline_access api',
      },
    ],
    // LOGINS: step-up requests name one of these (RFC 9470 acr_values).
    acrValues: ['urn:interop:pwd', 'urn:interop:mfa'],
    scopes: ['openid', 'offline_access', 'api'],
    // LOGINS: the default policy, the silent-login client exempted from
    // the consent asked of every native client.
    interactions: { policy },
    features: {
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      devInteractions: { enabled: false },
      // LOGINS: RFC 8628.
      deviceFlow: { enabled: true },
      // DPoP: proofs checked at the token endpoint, a nonce always required.
      dPoP: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true },
      // MCP: self-registering clients, and one resource server.
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (resourceIndicator === `${issuer}/mcp`) {
            return { scope: 'api', audience: resourceIndicator, accessTokenFormat: 'opaque' };
          }
          throw new errors.InvalidTarget();
        },
      },
    },
    ttl: {
      AccessToken: accessTtl,
      ClientCredentials: accessTtl,
      RefreshToken: 3600,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 60,
      Session: 3600,
    },
    // Every refresh issues a new refresh token and consumes the old one;
    // reusing a consumed one revokes the grant (RFC 9700 §4.14.2).
    rotateRefreshToken: true,
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub }),
    }),
    cookies: { keys: ['interop-test-cookie-key'] },
  });

  // A grant and a refresh token for the test user, as the end of an
  // authorization_code flow would leave them (the flow itself needs a
  // browser); `extra` adds fields such as a DPoP key's `jkt`.
  const mintRefreshToken = async (forClientId, extra = {}) => {
    const grant = new provider.Grant({ accountId: 'interop-user', clientId: forClientId });
    grant.addOIDCScope('openid offline_access api');
    const grantId = await grant.save();
    const client = await provider.Client.find(forClientId);
    const refreshToken = new provider.RefreshToken({
      accountId: 'interop-user',
      client,
      grantId,
      scope: 'openid offline_access api',
      gty: 'authorization_code',
      ...extra,
    });
    return refreshToken.save();
  };

  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params?.grant_type;
    if (type === 'refresh_token') stats.refresh_token_grants += 1;
    if (type === 'client_credentials') stats.client_credentials_grants += 1;
    // LOGINS
    if (type === 'authorization_code') loginStats.authorization_code_grants += 1;
    if (type === 'urn:ietf:params:oauth:grant-type:device_code') loginStats.device_code_grants += 1;
    console.log(`EVENT grant.success ${type}`);
  });
  provider.on('grant.error', (_ctx, err) => {
    stats.grant_errors += 1;
    console.log(`EVENT grant.error ${err.error ?? err.message}`);
  });
  provider.on('introspection.error', (_ctx, err) => {
    console.log(`EVENT introspection.error ${err.error ?? err.message}`);
  });
  provider.on('revocation.error', (_ctx, err) => {
    console.log(`EVENT revocation.error ${err.error ?? err.message}`);
  });
  provider.on('server_error', (_ctx, err) => {
    console.log(`EVENT server_error ${err.stack}`);
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === '/token/introspection' && ctx.method === 'POST') stats.introspections += 1;
    if (ctx.path === '/token/revocation' && ctx.method === 'POST') stats.revocations += 1;

    if (ctx.path === '/test/login' && ctx.method === 'POST') {
      ctx.body = { refresh_token: await mintRefreshToken(clientId) };
      return;
    }
    // ---- LOGINS: the test-only interaction ---------------------------------
    // Where the provider sends the browser to log in and consent
    // (interactions.url's default). No browser exists: the test's HTTP
    // client follows the redirects with its cookies, and this route logs
    // the test user in and grants what was asked at once, or refuses
    // (?deny=1). Serves the authorization code flow and, after the device
    // code was confirmed at /device, the device flow.
    const interaction = /^\/interaction\/([^/]+)$/.exec(ctx.path);
    if (interaction && ctx.method === 'GET') {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      const { params } = details;
      loginStats.interactions += 1;
      loginStats.last_acr_values = params.acr_values ?? null;
      loginStats.last_max_age = params.max_age === undefined ? null : String(params.max_age);
      ctx.respond = false;
      if (ctx.query.deny) {
        loginStats.denied += 1;
        await provider.interactionFinished(ctx.req, ctx.res, {
          error: 'access_denied',
          error_description: 'the test user refused',
        }, { mergeWithLastSubmission: false });
        return;
      }
      const accountId = 'interop-user';
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId, clientId: params.client_id });
      grant.addOIDCScope(params.scope ?? 'openid');
      // MCP: consent to the RFC 8707 resource asked for, with its scopes.
      if (typeof params.resource === 'string') {
        grant.addResourceScope(params.resource, params.scope ?? '');
      }
      const grantId = await grant.save();
      const acr = params.acr_values ? params.acr_values.split(' ')[0] : 'urn:interop:pwd';
      await provider.interactionFinished(ctx.req, ctx.res, {
        login: { accountId, acr },
        consent: { grantId },
      }, { mergeWithLastSubmission: false });
      return;
    }
    if (ctx.path === '/test/logins' && ctx.method === 'GET') {
      ctx.body = loginStats;
      return;
    }
    // ---- end LOGINS ------------------------------------------------------
    if (ctx.path === '/test/stats' && ctx.method === 'GET') {
      ctx.body = stats;
      return;
    }
    if (ctx.path === '/api/data' && ctx.method === 'GET') {
      const auth = ctx.get('authorization');
      const match = /^Bearer ([^ ]+)$/i.exec(auth);
      if (!match) {
        ctx.status = 401;
        ctx.set('WWW-Authenticate', 'Bearer realm="interop"');
        return;
      }
      const token = await provider.AccessToken.find(match[1])
        ?? await provider.ClientCredentials.find(match[1]);
      if (!token || token.isExpired) {
        stats.api_rejected += 1;
        ctx.status = 401;
        ctx.set(
          'WWW-Authenticate',
          'Bearer realm="interop", error="invalid_token", error_description="expired or unknown"',
        );
        return;
      }
      stats.api_ok += 1;
      ctx.body = { ok: true, sub: token.accountId ?? token.clientId };
      return;
    }
    await next();
  });

  // ---- Signed client assertions: POST /test/assertions/login?client_id=…
  // mints a grant and refresh token for one of the assertion clients, as
  // /test/login does for the Basic one.
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/assertions/login' && ctx.method === 'POST') {
      const loginClientId = ctx.query.client_id;
      if (!assertionClientIds.has(loginClientId)) {
        ctx.status = 400;
        ctx.body = { error: 'unknown assertion client' };
        return;
      }
      ctx.body = { refresh_token: await mintRefreshToken(loginClientId) };
      return;
    }
    await next();
  });
  // ---- end of signed client assertions ----
  // ---- DPoP (RFC 9449) -------------------------------------------------
  const dpopStats = {
    token_nonce_challenges: 0,
    api_nonce_challenges: 0,
    api_requests: 0,
    api_ok: 0,
    api_rejected: 0,
  };
  let apiNonce = crypto.randomBytes(16).toString('base64url');
  let apiNonceAt = Date.now();
  const apiJtis = new Set();
  const dpopChallenge = (ctx, error, description) => {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', `DPoP algs="ES256", error="${error}", error_description="${description}"`);
  };
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/dpop/login' && ctx.method === 'POST') {
      ctx.body = {
        refresh_token: await mintRefreshToken('interop-dpop-client', { jkt: ctx.query.jkt }),
      };
      return;
    }
    if (ctx.path === '/test/dpop/stats' && ctx.method === 'GET') {
      ctx.body = dpopStats;
      return;
    }
    if (ctx.path === '/dpop/api/data' && ctx.method === 'GET') {
      dpopStats.api_requests += 1;
      const match = /^DPoP ([^ ]+)$/.exec(ctx.get('authorization'));
      const proof = ctx.get('dpop');
      if (!match || !proof) {
        dpopStats.api_rejected += 1;
        dpopChallenge(ctx, 'invalid_request', 'a DPoP token and proof are required');
        return;
      }
      let payload;
      let jkt;
      try {
        const verified = await jwtVerify(proof, EmbeddedJWK, { algorithms: ['ES256'], typ: 'dpop+jwt' });
        payload = verified.payload;
        jkt = await calculateJwkThumbprint(verified.protectedHeader.jwk);
      } catch (err) {
        dpopStats.api_rejected += 1;
        dpopChallenge(ctx, 'invalid_dpop_proof', `bad proof: ${err.code ?? err.message}`);
        return;
      }
      const htu = URL.parse(payload.htu);
      if (htu) {
        htu.search = '';
        htu.hash = '';
      }
      const ath = crypto.hash('sha256', match[1], 'base64url');
      const fresh = typeof payload.iat === 'number' && Math.abs(Date.now() / 1000 - payload.iat) <= 300;
      if (payload.htm !== 'GET' || htu?.href !== `${issuer}/dpop/api/data` || payload.ath !== ath
        || !fresh || typeof payload.jti !== 'string' || apiJtis.has(payload.jti)) {
        dpopStats.api_rejected += 1;
        dpopChallenge(ctx, 'invalid_dpop_proof', 'htm, htu, ath, iat or jti is wrong');
        return;
      }
      apiJtis.add(payload.jti);
      // A new resource nonce every ACCESS_TTL seconds: each round of the
      // test meets at least one challenge.
      if (Date.now() - apiNonceAt >= accessTtl * 1000) {
        apiNonce = crypto.randomBytes(16).toString('base64url');
        apiNonceAt = Date.now();
      }
      if (payload.nonce !== apiNonce) {
        dpopStats.api_nonce_challenges += 1;
        ctx.set('DPoP-Nonce', apiNonce);
        dpopChallenge(ctx, 'use_dpop_nonce', 'use the DPoP nonce');
        return;
      }
      const token = await provider.AccessToken.find(match[1]);
      if (!token || token.isExpired || token.jkt !== jkt) {
        dpopStats.api_rejected += 1;
        dpopChallenge(ctx, 'invalid_token', 'expired, unknown or bound to another key');
        return;
      }
      dpopStats.api_ok += 1;
      ctx.body = { ok: true, sub: token.accountId, jkt };
      return;
    }
    await next();
    if (ctx.path === '/token' && ctx.status === 400 && ctx.body?.error === 'use_dpop_nonce') {
      dpopStats.token_nonce_challenges += 1;
    }
  });
  // ---- end of DPoP -----------------------------------------------------

  server.on('request', provider.callback());
  console.log(`LISTENING ${issuer}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
