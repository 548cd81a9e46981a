// CloudFront Function (viewer request, cloudfront-js-2.0): crawlers asking for a spell page get
// the pre-rendered og page ("edge-rendered metadata"); people get the static execution page.
// CRAWLERS is filled in from infra/edge/crawlers.json by infra/edge/render.mjs at deploy time,
// so the edge and the local server route by one list.
var CRAWLERS = []; // filled in from crawlers.json
var SPELL_PAGE = /^\/spells\/[a-z0-9][a-z0-9-]{0,63}\/?$/;

function handler(event) {
  var request = event.request;
  var header = request.headers["user-agent"];
  var agent = header && header.value ? header.value.toLowerCase() : "";
  if (SPELL_PAGE.test(request.uri)) {
    for (var i = 0; i < CRAWLERS.length; i++) {
      if (agent.indexOf(CRAWLERS[i]) !== -1) {
        request.uri = request.uri.replace(/\/$/, "") + "/og";
        return request;
      }
    }
  }
  return request;
}
