// wxphone demo page: plays the Mini Program (tap → code) and the customer
// backend (code → POST /v1/phone-number). No external assets.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = "";
let lastCode = "";

// maskPhone mirrors wxphone.MaskPhone: 138****8000, +852 51****67.
function maskPhone(s) {
  if (!s) return "";
  let prefix = "", rest = s;
  if (s.startsWith("+")) {
    const i = s.search(/[ -]/);
    if (i > 0) { prefix = s.slice(0, i + 1); rest = s.slice(i + 1); } else { prefix = "+"; rest = s.slice(1); }
  }
  const r = Array.from(rest);
  const n = r.length;
  let head = 0, tail = 0;
  if (n >= 11) { head = 3; tail = 4; } else if (n >= 7) { head = 2; tail = 2; }
  if (head === 0) return prefix + "****";
  return prefix + r.slice(0, head).join("") + "****" + r.slice(n - tail).join("");
}

function setState(text) { $("state").textContent = text; }

async function postJSON(url, body, headers) {
  const res = await fetch(url, {
    method: "POST",
    headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
    body: JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { json = null; }
  return { status: res.status, text, json, retryAfter: res.headers.get("Retry-After") };
}

function show(res) {
  $("result-status").textContent = String(res.status);
  $("raw").textContent = res.json ? JSON.stringify(res.json, null, 2) : res.text;
  const ok = res.status === 200 && res.json;
  $("result-code").textContent = ok ? "–" : (res.json && res.json.error ? res.json.error.code : "–");
  $("masked").textContent = ok ? maskPhone(res.json.phoneNumber) : "–";
  $("full").textContent = ok ? res.json.phoneNumber : "–";
  $("replayed").textContent = ok ? String(res.json.replayed) : "–";
  let msg = "";
  if (!ok && res.json && res.json.error) {
    msg = res.json.error.message;
    if (res.json.error.code === "outcome_unknown") msg = "Ask the user to tap again. " + msg;
    if (res.retryAfter) msg += " (Retry-After: " + res.retryAfter + " s)";
  }
  $("message").textContent = msg;
}

async function seen(code) {
  const r = await postJSON("/demo/code-stats", { code });
  $("seen").textContent = r.json ? r.json.calls + " call(s)" : "?";
}

async function exchange(code) {
  // The switch selects the backend that exchanges in WeChat's API
  // security mode (encrypted request, signed and verified answer).
  const path = ($("secure").checked ? "/secure" : "") + "/v1/phone-number";
  setState("Backend: POST " + path + " …");
  const res = await postJSON(path, { code }, { Authorization: "Bearer " + apiKey });
  $("mode").textContent = $("secure").checked ? "API security mode (encrypted, signed)" : "plain";
  show(res);
  await seen(code);
  setState(res.status === 200 ? "Signed in." : "Failed: " + (res.json && res.json.error ? res.json.error.code : res.status));
}

async function tap() {
  // A real Mini Program disables the button after a tap: every tap that
  // yields a code is billed.
  $("tap").disabled = true;
  $("again").disabled = true;
  try {
    setState("WeChat: the user allows sharing the number …");
    const minted = await postJSON("/demo/mint", { purePhoneNumber: $("pure").value.trim(), countryCode: $("country").value.trim() });
    if (minted.status !== 200) {
      setState("Could not mint a code: " + (minted.json ? minted.json.error : minted.status));
      return;
    }
    lastCode = minted.json.code;
    setState("Mini Program got code " + lastCode.slice(0, 8) + "…");
    await exchange(lastCode);
  } catch (e) {
    setState("Network error: " + e);
  } finally {
    $("tap").disabled = false;
    $("again").disabled = lastCode === "";
  }
}

async function again() {
  if (!lastCode) return;
  $("again").disabled = true;
  try { await exchange(lastCode); } finally { $("again").disabled = false; }
}

async function fault(name) {
  const r = await postJSON("/demo/fault", { fault: name });
  $("fault-state").textContent = r.json && r.json.description ? r.json.description : "fault failed";
}

async function init() {
  try {
    const res = await postJSON("/demo/config", {});
    const cfg = res.json;
    apiKey = cfg.apiKey;
    $("tap").disabled = false;
    setState("Ready (" + cfg.appid + "). Tap the green button.");
    document.body.dataset.ready = "true";
  } catch (e) {
    setState("Cannot load the demo configuration: " + e);
  }
}

$("tap").addEventListener("click", tap);
$("again").addEventListener("click", again);
document.querySelectorAll("[data-fault]").forEach((b) => b.addEventListener("click", () => fault(b.dataset.fault)));
init();
