// File inputs (SPEC §7.3), loaded only by a spell that has one: a preview of the picked file with
// its name and size, the input's maxBytes checked before anything is sent, and at the cast the
// upload — POST /api/v1/uploads, then a PUT of the bytes straight to the URL it names (S3 on
// AWS). The server judges the file by its bytes; this only spares a user a pointless upload.

import { Problem, api, el } from "/static/js/common.js";

const size = (n) => (n < 1024 ? `${n} bytes` : n < 1048576 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`);

/** Adds a preview under a file `input` for property schema `s`. */
export function picker(input, s) {
  // Styled here, not in spell.css: no other page pays for it (CSSOM, which the CSP allows).
  const preview = el("figure", { className: "preview", hidden: true, "aria-live": "polite" });
  preview.style.margin = ".4rem 0";
  input.after(preview);
  input.addEventListener("change", () => {
    const file = input.files[0];
    const err = document.getElementById(`${input.id}-e`);
    err.hidden = true;
    input.removeAttribute("aria-invalid");
    if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
    preview.hidden = !file;
    if (!file) return;
    if (file.size > s.maxBytes) {
      err.textContent = `This file is ${size(file.size)}; the largest allowed is ${size(s.maxBytes)}.`;
      err.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.value = "";
      preview.hidden = true;
      return;
    }
    const caption = el("figcaption", { textContent: `${file.name} · ${size(file.size)}` });
    if (file.type.startsWith("image/")) {
      preview.dataset.url = URL.createObjectURL(file);
      const img = el("img", { src: preview.dataset.url, alt: `Preview of ${file.name}` });
      Object.assign(img.style, { display: "block", maxWidth: "12rem", maxHeight: "12rem" });
      preview.replaceChildren(img, caption);
    } else {
      preview.replaceChildren(caption);
    }
  });
}

/** Uploads every picked file of `ctx`, replacing it by its upload id. */
export async function uploads(ctx, token) {
  for (const [name, file] of Object.entries(ctx)) {
    if (!(file instanceof File)) continue;
    const ticket = await api("/api/v1/uploads", token, { mime: file.type || "application/octet-stream", bytes: file.size });
    // A browser sets Content-Length (and Host) itself, from the body.
    const headers = Object.fromEntries(Object.entries(ticket.headers).filter(([k]) => k !== "content-length" && k !== "host"));
    const put = await fetch(ticket.url, { method: "PUT", headers, body: file });
    if (!put.ok) throw new Problem(put.status, { detail: `The file for “${name}” could not be uploaded (${put.status}). Try again.` });
    ctx[name] = ticket.uploadId;
  }
}
