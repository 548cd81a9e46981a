// The home page (SPEC §3.11a): the catalog from GET /api/v1/spells, one card per spell with its
// picture, summary and average cost, linking to its page. A spell file added to the catalog
// shows up here with no change to this page.

const list = document.getElementById("catalog");
const status = document.getElementById("catalog-status");

/** A same-site picture by its path (the page's CSP allows images from this site only). */
function picture(url) {
  const u = new URL(url, location.href);
  return u.pathname.startsWith("/static/") || u.origin === location.origin ? u.pathname + u.search : u.href;
}

function card(spell) {
  const li = document.createElement("li");
  li.className = "card";
  const img = document.createElement("img");
  img.src = picture(spell.og.image);
  img.alt = ""; // the title next to it says what it is
  img.width = 1200;
  img.height = 630;
  img.loading = "lazy";
  img.decoding = "async";
  const h = document.createElement("h2");
  const a = document.createElement("a");
  a.href = `/spells/${encodeURIComponent(spell.slug)}`;
  a.textContent = spell.title;
  h.append(a);
  const summary = document.createElement("p");
  summary.textContent = spell.summary;
  const price = document.createElement("p");
  price.className = "muted";
  const pts = spell.avgCostPtsCached;
  price.textContent = `Average cost ${pts} point${pts === 1 ? "" : "s"}`;
  li.append(img, h, summary, price);
  return li;
}

async function load() {
  try {
    const r = await fetch("/api/v1/spells", { headers: { accept: "application/json" } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const { spells } = await r.json();
    list.replaceChildren(...spells.map(card));
    status.textContent = spells.length ? `${spells.length} spells` : "No spells yet.";
  } catch {
    status.textContent = "Could not load the spells. Reload the page to try again.";
  }
}

load();
