// A real OpenID provider for the sign-in tests: npm `oidc-provider` (OpenID Certified) on
// 127.0.0.1, issuer http://127.0.0.1:PORT, in development mode (its own login page accepts any
// name and password). Usage:
//   node provider.mjs PORT KEYS.json CLIENT_ID REDIRECT_URI [REDIRECT_URI ...]
// KEYS.json is a private JWK set (the tests make it, so they can rotate keys by restarting the
// provider with another set; the first key of an algorithm signs). The client is public (no
// secret: PKCE, as a browser or a CLI is) and may also use the device authorization flow.
// Prints "listening http://127.0.0.1:PORT" once it serves.
import fs from "node:fs";
import Provider from "oidc-provider";

const [port, keysFile, clientId, ...redirectUris] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(fs.readFileSync(keysFile, "utf8"));

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: "none",
    application_type: "web",
    redirect_uris: redirectUris,
    post_logout_redirect_uris: redirectUris,
    grant_types: ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
    response_types: ["code"],
    id_token_signed_response_alg: jwks.keys[0].alg,
  }],
  jwks,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, deviceFlow: { enabled: true } },
  claims: { openid: ["sub"], profile: ["name"] },
  // The user's name in the ID token itself, as Cognito, Google and Auth0 put it there.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return { accountId: id, claims: async () => ({ sub: id, name: id }) };
  },
  // The browser's page is on another origin than the provider (the token request is a CORS call).
  clientBasedCORS: () => true,
});
// The provider runs behind nothing: plain http on loopback.
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`listening ${issuer}`));
