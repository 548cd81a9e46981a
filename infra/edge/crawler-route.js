import cf from "cloudfront";

// CloudFront Function (viewer request, cloudfront-js-2.0) on every cache behaviour but the stream:
// - copies the viewer's Host into x-spellcast-host, so the functions (reached through API Gateway
//   under its own host) build canonical URLs on the site's domain (a header of our own: API
//   Gateway rewrites some X-Forwarded-* ones);
// - on a spell page, crawlers get the pre-rendered og page from the og function (API origin),
//   people get the static execution page from S3;
// - a run's page (/runs/{runId}) is the execution page too, and /me is the account page;
// - a shared run (/r/{shareId}): crawlers get its og page from the og function, people its
//   static public page.
// CRAWLERS is filled in from infra/edge/crawlers.json by infra/edge/render.mjs, which also writes
// the rendered code into infra/template.yaml, so the edge and the local server route by one list.
var CRAWLERS = []; // filled in from crawlers.json
var SPELL_PAGE = /^\/spells\/[a-z0-9][a-z0-9-]{0,63}\/?$/;
var API_ORIGIN = "api"; // the origin id of API Gateway in infra/template.yaml
var EXECUTION_PAGE = "/static/spell.html";
var RUN_PAGE = /^\/runs\/[A-Za-z0-9_-]{1,128}\/?$/;
var ACCOUNT_PAGE = "/static/me.html";
var SHARE_PAGE = /^\/r\/[A-Za-z0-9_-]{1,128}\/?$/;
var SHARED_RUN_PAGE = "/static/share.html";

function isCrawler(agent) {
  for (var i = 0; i < CRAWLERS.length; i++) {
    if (agent.indexOf(CRAWLERS[i]) !== -1) return true;
  }
  return false;
}

function handler(event) {
  var request = event.request;
  var host = request.headers.host;
  if (host && host.value) request.headers["x-spellcast-host"] = { value: host.value };
  var shared = SHARE_PAGE.test(request.uri);
  if (SPELL_PAGE.test(request.uri) || shared) {
    var header = request.headers["user-agent"];
    var agent = header && header.value ? header.value.toLowerCase() : "";
    if (isCrawler(agent)) {
      request.uri = request.uri.replace(/\/$/, "") + "/og";
      cf.selectRequestOriginById(API_ORIGIN);
    } else {
      request.uri = shared ? SHARED_RUN_PAGE : EXECUTION_PAGE;
    }
  } else if (RUN_PAGE.test(request.uri)) {
    request.uri = EXECUTION_PAGE;
  } else if (request.uri === "/me" || request.uri === "/me/") {
    request.uri = ACCOUNT_PAGE;
  }
  return request;
}
