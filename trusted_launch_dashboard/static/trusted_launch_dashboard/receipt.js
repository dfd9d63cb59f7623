/* Verify a trusted launch's signed receipts in the tenant's browser (doc/dashboard.md).
 *
 * The tenant picks their nonce file; this script reads N locally, derives the
 * receipt proof HKDF-SHA256(N, info="trusted-launch/v1 receipt") and sends
 * only the proof to the dashboard, which fetches the receipts from the TTP.
 * The script then checks each receipt's ECDSA P-256 signature against the
 * TTP's published receipt key, its token digest, and its nonce binding
 * HMAC-SHA256(HKDF(N, info="trusted-launch/v1 receipt-binding"), token digest).
 * N and the proof never enter the page or leave this script's variables.
 */
(function () {
  "use strict";
  var enc = new TextEncoder();
  var subtle = window.crypto && window.crypto.subtle;

  function hexToBytes(hex) {
    var out = new Uint8Array(hex.length / 2);
    for (var i = 0; i < out.length; i++) { out[i] = parseInt(hex.substr(2 * i, 2), 16); }
    return out;
  }
  function bytesToHex(bytes) {
    return Array.prototype.map.call(new Uint8Array(bytes), function (b) {
      return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function b64urlToBytes(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }
  function bytesToB64url(bytes) {
    var raw = String.fromCharCode.apply(null, new Uint8Array(bytes));
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function concat(parts) {
    var length = parts.reduce(function (n, p) { return n + p.length; }, 0);
    var out = new Uint8Array(length), offset = 0;
    parts.forEach(function (p) { out.set(p, offset); offset += p.length; });
    return out;
  }
  /* The 32-byte N of a nonce file: raw, hex or base64 (as trusted_launch.crypto.nonce). */
  function decodeNonce(data) {
    if (data.length === 32) { return data; }
    var text = new TextDecoder().decode(data).trim();
    if (/^[0-9a-fA-F]{64}$/.test(text)) { return hexToBytes(text.toLowerCase()); }
    try {
      var decoded = b64urlToBytes(text);
      if (decoded.length === 32) { return decoded; }
    } catch (e) { /* fall through */ }
    throw new Error("the file does not hold a 32-byte nonce");
  }
  function hkdf(nonce, info) {
    return subtle.importKey("raw", nonce, "HKDF", false, ["deriveBits"]).then(function (key) {
      return subtle.deriveBits({name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0),
                                info: enc.encode(info)}, key, 256);
    });
  }
  function pemToDer(pem) {
    return b64urlToBytes(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));
  }
  function verifyOne(envelope, keys, nonce, tokenDigest) {
    var key = keys[envelope.key_id];
    var payloadBytes = b64urlToBytes(envelope.payload);
    var payload = JSON.parse(new TextDecoder().decode(payloadBytes));
    var result = {payload: payload, signature: false, bound: false, digest: false};
    if (!key || envelope.format !== "trusted-launch-receipt/v1") { return Promise.resolve(result); }
    var signed = concat([enc.encode("trusted-launch/v1 receipt\0" + envelope.key_id + "\0"),
                         payloadBytes]);
    return subtle.importKey("spki", pemToDer(key.public_key),
                            {name: "ECDSA", namedCurve: "P-256"}, false, ["verify"])
      .then(function (publicKey) {
        return subtle.verify({name: "ECDSA", hash: "SHA-256"}, publicKey,
                             b64urlToBytes(envelope.signature), signed);
      }).then(function (ok) {
        result.signature = ok;
        result.digest = payload.token_digest === tokenDigest;
        return hkdf(nonce, "trusted-launch/v1 receipt-binding");
      }).then(function (bindingKey) {
        return subtle.importKey("raw", bindingKey, {name: "HMAC", hash: "SHA-256"}, false,
                                ["sign"]);
      }).then(function (hmacKey) {
        return subtle.sign("HMAC", hmacKey, hexToBytes(tokenDigest));
      }).then(function (mac) {
        result.bound = bytesToHex(mac) === payload.nonce_binding;
        return result;
      });
  }
  function cell(text, cls, label) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    if (label) { td.style.whiteSpace = "nowrap"; } else { td.style.wordBreak = "break-all"; }
    return td;
  }
  function isoTime(seconds) { return new Date(seconds * 1000).toISOString().replace(".000", ""); }
  function render(box, results) {
    box.textContent = "";
    var table = document.createElement("table");
    table.className = "table table-condensed tl-receipts";
    results.forEach(function (r) {
      var p = r.payload, ok = r.signature && r.bound && r.digest;
      var rows = [["verdict", p.verdict + (p.reason ? " (" + (p.check || "") + ": " + p.reason + ")" : "")],
                  ["verified", ok ? "yes: signature, token digest and nonce binding"
                                  : "NO: signature " + r.signature + ", token digest " + r.digest +
                                    ", nonce binding " + r.bound],
                  ["host", p.host], ["profiles", "asked " + (p.requested_profile || "-") + ", met " +
                                                           (p.satisfied_profile || "-")],
                  ["issued at", isoTime(p.issued_at)], ["attestation", p.attestation_id],
                  ["image digest", p.image_digest || "-"], ["TTP key", p.ttp_key_id || "-"]];
      rows.forEach(function (pair) {
        var tr = document.createElement("tr");
        tr.appendChild(cell(pair[0], "", true));
        tr.appendChild(cell(pair[1], pair[0] === "verified" ? (ok ? "tl-verified text-success"
                                                                   : "tl-unverified text-danger") : ""));
        table.appendChild(tr);
      });
    });
    box.appendChild(table);
    var trusted = results.filter(function (r) { return r.payload.verdict === "trusted"; });
    if (trusted.length) {
      var last = trusted[trusted.length - 1].payload;
      var row = box.closest("tr");
      row.querySelector(".tl-host-level").textContent = "meets " + last.satisfied_profile +
        " (receipt, host " + last.host + ")";
      row.querySelector(".tl-attested").textContent = isoTime(last.issued_at) + " (receipt)";
    }
  }
  function csrfToken() {
    var field = document.querySelector("#tl-csrf input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }
  function onFile(event) {
    var input = event.target, box = input.closest("td").querySelector(".tl-receipt-result");
    var file = input.files && input.files[0];
    var tokenDigest = input.getAttribute("data-token-digest");
    input.value = "";
    if (!file) { return; }
    if (!subtle) { box.textContent = "this browser offers no WebCrypto here (use HTTPS)"; return; }
    box.textContent = "verifying...";
    var nonce;
    file.arrayBuffer().then(function (buffer) {
      nonce = decodeNonce(new Uint8Array(buffer));
      return hkdf(nonce, "trusted-launch/v1 receipt");
    }).then(function (proof) {
      return fetch(input.getAttribute("data-receipts-url"), {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
        body: JSON.stringify({proof: bytesToB64url(proof)})});
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error(body.error || response.statusText); }
        return body;
      });
    }).then(function (body) {
      var keys = {};
      (body.receipt_keys || []).forEach(function (k) { keys[k.id] = k; });
      return Promise.all(body.receipts.map(function (envelope) {
        return verifyOne(envelope, keys, nonce, tokenDigest);
      }));
    }).then(function (results) {
      nonce = null;
      render(box, results);
    }).catch(function (error) {
      nonce = null;
      box.textContent = "receipt: " + error.message;
      box.className = "tl-receipt-result text-danger";
    });
  }
  document.querySelectorAll(".tl-nonce-file").forEach(function (input) {
    input.addEventListener("change", onFile);
  });
})();
