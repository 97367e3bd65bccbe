// A real OpenID provider (panva/node-oidc-provider) for hookrelay's
// token-exchange tests. Workloads get JWT access tokens from it with the
// client-credentials grant; `resource` picks the audience.
//
//   node issuer.mjs <port> <issuer URL> <JWKS file with private keys>
//
// Clients: `deploy-bot` and `intruder` (secret: `secret`). Their tokens carry
// `repository: "acme/<client>"` and `ref: "refs/heads/main"`, as GitHub
// Actions' do. Prints `ready` once it listens.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, issuer, jwksFile] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(jwksFile, 'utf8'));
const client = (id) => ({
  client_id: id,
  client_secret: 'secret',
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  token_endpoint_auth_method: 'client_secret_post',
  id_token_signed_response_alg: 'ES256',
});

const provider = new Provider(issuer, {
  clients: [client('deploy-bot'), client('intruder')],
  jwks,
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'deploy',
        audience: resource,
        accessTokenFormat: 'jwt',
        accessTokenTTL: Number(process.env.TOKEN_TTL || 300),
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => ({
    repository: `acme/${token.clientId}`,
    ref: 'refs/heads/main',
  }),
});

const server = provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
