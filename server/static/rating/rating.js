// Blind rating UI. All model text goes in through textContent (never innerHTML): answers are untrusted.
// The rater is whoever the link's token belongs to; every call sends it (a header, so no cookie can be ridden).
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("rating-config").textContent);
  const TOKEN = new URLSearchParams(window.location.search).get("token") || "";
  const DIMS = cfg.rubric.map((d) => d.key);
  const $ = (id) => document.getElementById(id);
  const st = {
    lang: localStorage.getItem("rating.lang") || cfg.lang,
    mode: "single", order: [], done: new Set(), pos: -1, history: [],
    item: null, scores: {}, active: 0, choice: null, busy: false,
  };

  function t(key, vars) {
    let s = (cfg.text[st.lang] || cfg.text.en)[key];
    if (typeof s === "string" && vars) for (const [k, v] of Object.entries(vars)) s = s.replace("{" + k + "}", () => v);  // v taken literally ($&)
    return s;
  }
  function setText(id, key) { $(id).textContent = t(key); }
  function view(name) {
    for (const v of ["start", "item", "done"]) $("view-" + v).hidden = v !== name;
    $("change-mode").hidden = name === "start";
  }
  function status(msg, kind) {
    const el = $("status");
    el.textContent = msg || "";
    el.className = kind || "";
  }

  // ---------------------------------------------------------------- text in the chosen UI language
  function applyText() {
    document.documentElement.lang = st.lang;
    $("ui-lang").value = st.lang;
    document.title = t("title");
    $("rating-as").textContent = t("rating_as", { name: cfg.rater });
    for (const [id, key] of [["title", "title"], ["intro", "intro"],
      ["mode-label", "mode_label"], ["mode-single", "mode_single"], ["mode-pairwise", "mode_pairwise"],
      ["start", "start"], ["change-mode", "change_mode"], ["ui-lang-label", "language"],
      ["q-heading", "question"], ["ref-heading", "reference"], ["comment-label", "comment"], ["back", "back"],
      ["skip", "skip"], ["save", "save_next"], ["choose-a", "a_better"], ["choose-b", "b_better"],
      ["choose-tie", "tie"], ["done-title", "done_title"], ["done-text", "done_text"], ["done-back", "back"]]) {
      setText(id, key);
    }
    const pair = st.mode === "pairwise";
    setText("a-heading", pair ? "answer_a" : "answer");
    setText("b-heading", "answer_b");
    setText("shortcuts", pair ? "shortcuts_pair" : "shortcuts");
    refText();
    renderScales();
    progress();
    if (st.item) $("q-lang").textContent = t("item_lang")[st.item.lang] || "";
  }
  function refText() {
    const open = !$("reference-box").hidden;
    $("toggle-ref").textContent = t(open ? "hide_reference" : "show_reference");
    $("toggle-ref").setAttribute("aria-expanded", String(open));
  }

  // ---------------------------------------------------------------- the three 1-5 scales
  function renderScales() {
    const box = $("scales");
    box.replaceChildren();
    if (st.mode !== "single") return;
    cfg.rubric.forEach((dim, i) => {
      const fs = document.createElement("fieldset");
      fs.className = "scale" + (i === st.active ? " active" : "");
      fs.id = "scale-" + dim.key;
      const lg = document.createElement("legend");
      lg.textContent = dim.name[st.lang] + " ";
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = "(" + dim.question[st.lang] + ")";
      lg.append(hint);
      fs.append(lg);
      const levels = document.createElement("div");
      levels.className = "levels";
      for (const lvl of dim.levels) {
        const lab = document.createElement("label");
        lab.className = "level" + (st.scores[dim.key] === lvl.score ? " checked" : "");
        const inp = document.createElement("input");
        inp.type = "radio";
        inp.name = dim.key;
        inp.value = lvl.score;
        inp.id = dim.key + "-" + lvl.score;
        inp.checked = st.scores[dim.key] === lvl.score;
        inp.addEventListener("change", () => { score(i, lvl.score, false); });
        const num = document.createElement("span");
        num.className = "num";
        num.textContent = lvl.score;
        const txt = document.createElement("span");
        txt.textContent = lvl.text[st.lang];
        lab.append(inp, num, txt);
        levels.append(lab);
      }
      fs.append(levels);
      fs.addEventListener("focusin", () => activate(i));
      fs.addEventListener("click", () => activate(i));
      box.append(fs);
    });
  }
  function activate(i) {
    st.active = i;
    document.querySelectorAll(".scale").forEach((fs, j) => fs.classList.toggle("active", j === i));
  }
  function score(dimIndex, value, advance) {
    st.scores[DIMS[dimIndex]] = value;
    const fs = $("scale-" + DIMS[dimIndex]);
    fs.querySelectorAll(".level").forEach((lab) => {
      const inp = lab.querySelector("input");
      inp.checked = Number(inp.value) === value;
      lab.classList.toggle("checked", inp.checked);
    });
    if (advance) activate(Math.min(dimIndex + 1, DIMS.length - 1));
  }

  // ---------------------------------------------------------------- server calls
  async function api(path, params, body) {
    const url = new URL(cfg.api + path, window.location.href);
    for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
    const headers = { Authorization: "Bearer " + TOKEN };
    const res = await fetch(url, body === undefined ? { headers: headers } : {
      method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON: reported below */ }
    if (!res.ok || !data) throw new Error((data && data.error) || ("HTTP " + res.status));
    return data;
  }

  async function start(ev) {
    ev.preventDefault();
    $("start-error").textContent = "";
    st.mode = document.querySelector("input[name=mode]:checked").value;
    localStorage.setItem("rating.mode", st.mode);
    try {
      const q = await api("/queue", { mode: st.mode });
      st.order = q.order;
      st.done = new Set(q.done);
    } catch (e) { $("start-error").textContent = e.message; return; }
    st.history = [];
    st.pos = -1;
    const pair = st.mode === "pairwise";
    $("answers").classList.toggle("two", pair);
    $("answer-b-card").hidden = !pair;
    $("pair-choice").hidden = !pair;
    $("save").hidden = pair;
    applyText();
    if (!st.order.length) { view("done"); $("done-title").textContent = t("empty"); $("done-text").textContent = ""; return; }
    await goNext(false);
  }

  function progress() {
    const total = st.order.length;
    $("progress").max = Math.max(total, 1);
    $("progress").value = st.done.size;
    $("progress-text").textContent = t("progress", { done: st.done.size, total: total });
  }

  async function show(pos) {
    st.pos = pos;
    const key = st.order[pos];
    const data = await api((st.mode === "pairwise" ? "/pair/" : "/item/") + encodeURIComponent(key));
    st.item = data;
    st.scores = {};
    st.choice = null;
    st.active = 0;
    $("question").textContent = data.question;
    $("question").lang = data.lang || "";
    $("q-lang").textContent = t("item_lang")[data.lang] || "";
    $("reference").textContent = data.reference || "—";
    $("reference-box").hidden = true;
    refText();
    $("answer").textContent = st.mode === "pairwise" ? data.answer_a : data.answer;
    $("answer-b").textContent = data.answer_b || "";
    $("answer").lang = $("answer-b").lang = data.lang || "";
    const prior = st.mode === "pairwise" ? data.judgement : data.rating;
    $("comment").value = prior ? prior.comment || "" : "";
    if (prior && st.mode === "single") for (const d of DIMS) st.scores[d] = prior[d];
    if (prior && st.mode === "pairwise") st.choice = prior.choice;
    renderScales();
    markChoice();
    view("item");
    progress();
    status(prior ? t("already_rated") : "", "");
    $("q-heading").setAttribute("tabindex", "-1");
    $("q-heading").focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }

  function nextPos() {
    const n = st.order.length;
    for (let k = 1; k <= n; k++) {
      const p = (st.pos + k) % n;
      if (!st.done.has(st.order[p]) && (p !== st.pos || k === n)) return p;
    }
    return -1;
  }
  async function goNext(remember) {
    const p = nextPos();
    if (p < 0 || (p === st.pos && st.done.has(st.order[p]))) {
      if (remember !== false && st.pos >= 0) st.history.push(st.pos);
      st.item = null;
      view("done");
      progress();
      return;
    }
    if (remember !== false && st.pos >= 0) st.history.push(st.pos);
    await show(p);
  }
  async function back() {
    if (st.busy) return;
    let p = st.history.length ? st.history.pop() : st.pos - 1;
    if (p < 0) return;
    await show(p);
  }

  async function save() {
    if (st.busy || !st.item) return;
    if (st.mode === "pairwise") { if (st.choice) return choose(st.choice); return goNext(); }
    const n = DIMS.filter((d) => st.scores[d]).length;
    if (n === 0 && !st.item.rating) return goNext();
    if (n < DIMS.length) { status(t("incomplete"), "err"); return; }
    const body = { uid: st.item.uid, comment: $("comment").value };
    for (const d of DIMS) body[d] = st.scores[d];
    await submit("/rate", body, st.item.uid);
  }
  async function choose(choice) {
    if (st.busy || !st.item) return;
    st.choice = choice;
    markChoice();
    await submit("/compare", { pair: st.item.pair, choice: choice, comment: $("comment").value },
      st.item.pair);
  }
  async function submit(path, body, key) {
    st.busy = true;
    status(t("saving"), "");
    try {
      const res = await api(path, {}, body);
      if (!res.saved) throw new Error("no confirmation");
      st.done.add(key);
      await goNext();
      status(t("saved"), "ok");  // only after the server confirmed the committed write
    } catch (e) {
      status(t("error", { error: e.message }), "err");
    } finally {
      st.busy = false;
    }
  }
  function markChoice() {
    for (const c of ["a", "tie", "b"]) $("choose-" + c).setAttribute("aria-pressed", String(st.choice === c));
  }
  function toggleRef() {
    $("reference-box").hidden = !$("reference-box").hidden;
    refText();
  }

  // ---------------------------------------------------------------- keyboard: 1-5, n/Enter, s, p/←, r, a/b/t
  function onKey(ev) {
    if ($("view-item").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const el = document.activeElement;
    const typing = el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio") || el.tagName === "SELECT");
    if (typing) return;
    const k = ev.key.toLowerCase();
    let handled = true;
    if (st.mode === "single" && /^[1-5]$/.test(k)) score(st.active, Number(k), true);
    else if (st.mode === "pairwise" && (k === "a" || k === "b" || k === "t")) choose(k === "t" ? "tie" : k);
    else if (k === "n" || (k === "enter" && (!el || el.tagName !== "BUTTON"))) save();
    else if (k === "s") goNext();
    else if (k === "p" || (k === "arrowleft" && (!el || el.tagName !== "INPUT"))) back();
    else if (k === "r") toggleRef();
    else handled = false;
    if (handled) ev.preventDefault();
  }

  // ---------------------------------------------------------------- wiring
  $("start-form").addEventListener("submit", start);
  $("rate-form").addEventListener("submit", (ev) => { ev.preventDefault(); save(); });
  $("skip").addEventListener("click", () => goNext());
  $("back").addEventListener("click", back);
  $("done-back").addEventListener("click", back);
  $("toggle-ref").addEventListener("click", toggleRef);
  for (const c of ["a", "tie", "b"]) $("choose-" + c).addEventListener("click", () => choose(c));
  $("change-mode").addEventListener("click", () => { st.item = null; view("start"); $("start").focus(); });
  $("ui-lang").addEventListener("change", (ev) => {
    st.lang = ev.target.value;
    localStorage.setItem("rating.lang", st.lang);
    applyText();
  });
  document.addEventListener("keydown", onKey);
  const mode = localStorage.getItem("rating.mode");
  if (mode) document.querySelector("input[name=mode][value=" + mode + "]").checked = true;
  applyText();
  view("start");
})();
