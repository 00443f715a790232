// kube-nftpol ui: fills the page from /api/graph, draws the graph with Cytoscape.js and its
// dagre layout, and asks /api/selection for the policies of the ticked flows (and what they
// would block) whenever a box changes. Every failure is listed in #problems: the page is never
// left blank. State for tests: body[data-state] is loading, ready, empty or failed;
// body[data-pending] is 1 while a selection is computed.
"use strict";

(() => {
  const COLORS = { allow: "#2e7d32", audit: "#e65100", deny: "#c62828", muted: "#78909c" };
  const VERDICTS = { allow: "allowed", audit: "audited", deny: "denied" };
  const CHANGES = {
    newly_denied: "blocked (allowed today)",
    still_denied: "blocked (denied today too)",
    newly_allowed: "allowed (denied today)",
    kept: "allowed",
    unknown: "cannot tell (no port or address)",
  };
  const $ = (id) => document.getElementById(id);
  const state = { graph: null, nodes: new Map(), groups: new Map(), excluded: new Set(),
    changes: {}, yaml: "", request: 0, cy: null };
  window.kubeNftpol = state;

  function problem(text) {
    const item = document.createElement("li");
    item.textContent = text;
    $("problems").appendChild(item);
    $("problems").hidden = false;
  }
  window.addEventListener("error", (event) => problem(`The page failed: ${event.message}`));
  window.addEventListener("unhandledrejection", (event) =>
    problem(`The page failed: ${(event.reason && event.reason.message) || event.reason}`));

  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new Error(`kube-nftpol ui does not answer (${error.message}): is it still running?`);
    }
    if (!response.ok) {
      throw new Error(`${path} answered ${response.status}: ${(await response.text()).trim()}`);
    }
    return response.json();
  }

  const isExternal = (edge) => [edge.source, edge.destination]
    .some((id) => state.groups.get(state.nodes.get(id).group).kind === "external");
  const port = (edge) => (edge.port === undefined ? edge.protocol : `${edge.protocol}/${edge.port}`);
  const groupTitle = (group) => (group.kind === "external" ? "addresses (not pods)"
    : `namespace ${group.name}${group.observed ? " (observed)" : ""}`);
  const podEnd = (end) => (end.pod ? `${end.pod.namespace}/${end.pod.name}` : end.ip);

  function edgeLabel(edge) {
    const label = `${port(edge)} (${edge.flows} flow${edge.flows === 1 ? "" : "s"})`;
    const change = state.changes[edge.id];
    if (change === "newly_denied") return `${label}\nwould be denied`;
    if (change === "newly_allowed") return `${label}\nwould be allowed`;
    return label;
  }

  function placeholder(container, text) {
    const p = document.createElement("p");
    p.className = "placeholder";
    p.textContent = text;
    container.replaceChildren(p);
  }

  const FONT = "Helvetica Neue, Helvetica, sans-serif";
  const FONT_SIZE = 11;
  const measure = document.createElement("canvas").getContext("2d");

  // A node's box from its label's lines (the graph library sizes boxes from numbers).
  function box(label) {
    measure.font = `${FONT_SIZE}px ${FONT}`;
    const lines = label.split("\n");
    const width = Math.max(...lines.map((line) => measure.measureText(line).width));
    return { width: Math.ceil(width) + 18, height: lines.length * Math.ceil(FONT_SIZE * 1.3) + 14 };
  }

  const STYLE = [
    { selector: "node", style: { label: "data(label)", "text-wrap": "wrap", "text-valign": "center",
      "text-halign": "center", shape: "round-rectangle", "background-color": "#ffffff",
      "border-width": 1, "border-color": "#455a64", "font-size": FONT_SIZE, "font-family": FONT,
      color: "#263238" } },
    { selector: "node[width]", style: { width: "data(width)", height: "data(height)" } },
    { selector: "node.address", style: { shape: "ellipse" } },
    { selector: "node.idle", style: { "border-style": "dashed", "border-color": COLORS.muted,
      color: COLORS.muted } },
    { selector: ":parent", style: { "text-valign": "top", "text-halign": "center",
      "background-color": "#eceff1", "background-opacity": 0.6, "border-color": "#90a4ae",
      "font-weight": "bold", padding: "14px" } },
    { selector: ":parent.external", style: { "border-style": "dashed" } },
    { selector: "edge", style: { "curve-style": "bezier", "target-arrow-shape": "triangle",
      label: "data(label)", "text-wrap": "wrap", "font-size": 9, "text-rotation": "autorotate",
      "text-background-color": "#ffffff", "text-background-opacity": 0.85, width: 1.5 } },
    { selector: "edge.allow", style: { "line-color": COLORS.allow,
      "target-arrow-color": COLORS.allow, color: COLORS.allow } },
    { selector: "edge.audit", style: { "line-color": COLORS.audit,
      "target-arrow-color": COLORS.audit, color: COLORS.audit, "line-style": "dashed" } },
    { selector: "edge.deny", style: { "line-color": COLORS.deny, "target-arrow-color": COLORS.deny,
      color: COLORS.deny, "target-arrow-shape": "tee" } },
    { selector: "edge.newly_denied", style: { "line-color": COLORS.deny,
      "target-arrow-color": COLORS.deny, color: COLORS.deny, "target-arrow-shape": "tee",
      "line-style": "solid", width: 4 } },
    { selector: "edge.newly_allowed", style: { "line-color": COLORS.allow,
      "target-arrow-color": COLORS.allow, color: COLORS.allow, "target-arrow-shape": "triangle",
      "line-style": "solid", width: 4 } },
    { selector: "edge.highlight", style: { "underlay-color": "#42a5f5", "underlay-opacity": 0.4,
      "underlay-padding": 5 } },
  ];

  function drawGraph() {
    const container = $("graph");
    if (typeof cytoscape !== "function") {
      placeholder(container, "The graph library did not load; the flows and policies still work.");
      problem("The graph library (vendor/cytoscape.min.js) did not load.");
      return;
    }
    container.replaceChildren();
    const elements = [];
    for (const group of state.graph.groups) {
      elements.push({ data: { id: group.id, label: groupTitle(group) }, classes: group.kind });
    }
    for (const node of state.graph.nodes) {
      const kind = node.idle ? "idle" : (node.kind ? "workload" : "address");
      const label = node.kind ? `${node.name}\n${node.kind}` : node.name;
      elements.push({ data: { id: node.id, parent: node.group, label, ...box(label) },
        classes: kind });
    }
    for (const edge of state.graph.edges) {
      elements.push({ data: { id: `flow-${edge.id}`, flow: edge.id, source: edge.source,
        target: edge.destination, label: edgeLabel(edge) }, classes: edge.verdict });
    }
    const dagre = cytoscape("layout", "dagre") !== undefined;
    if (!dagre) problem("The dagre layout (vendor/cytoscape-dagre.min.js) did not load.");
    state.cy = cytoscape({
      container, elements, style: STYLE, minZoom: 0.2, maxZoom: 3,
      layout: dagre ? { name: "dagre", rankDir: "LR", nodeSep: 14, rankSep: 110, padding: 16 }
        : { name: "breadthfirst", directed: true, padding: 16 },
    });
    state.cy.on("tap", "edge", (event) => highlight(event.target.data("flow")));
  }

  function highlight(id) {
    for (const row of $("flows").tBodies[0].rows) {
      row.classList.toggle("highlight", row.dataset.flow === id);
    }
    if (state.cy) {
      state.cy.edges().removeClass("highlight");
      state.cy.getElementById(`flow-${id}`).addClass("highlight");
    }
  }

  function endCell(row, id) {
    const node = state.nodes.get(id);
    const cell = row.insertCell();
    cell.append(node.name);
    const group = state.groups.get(node.group);
    const detail = [group.kind === "external" ? "" : group.name, node.kind].filter((s) => s);
    if (detail.length > 0) {
      const span = document.createElement("div");
      span.className = "ns";
      span.textContent = detail.join(" · ");
      cell.appendChild(span);
    }
  }

  function drawTable() {
    const body = $("flows").tBodies[0];
    body.replaceChildren();
    for (const edge of state.graph.edges) {
      const row = body.insertRow();
      row.dataset.flow = edge.id;
      row.classList.toggle("excluded", state.excluded.has(edge.id));
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !state.excluded.has(edge.id);
      box.title = `flow ${edge.id}: ${edge.text}`;
      box.setAttribute("aria-label", `allow ${edge.text}`);
      box.addEventListener("change", () => {
        if (box.checked) state.excluded.delete(edge.id); else state.excluded.add(edge.id);
        row.classList.toggle("excluded", !box.checked);
        select();
      });
      row.insertCell().appendChild(box);
      endCell(row, edge.source);
      endCell(row, edge.destination);
      row.insertCell().textContent = port(edge);
      const seen = row.insertCell();
      seen.textContent = VERDICTS[edge.verdict];
      seen.className = edge.verdict;
      seen.title = edge.pods.map((pod) =>
        `${podEnd(pod.source)} -> ${podEnd(pod.destination)}: ${pod.sides.join("; ")}`).join("\n");
      row.insertCell().textContent = edge.flows;
      row.insertCell().className = "change";
      row.addEventListener("click", (event) => {
        if (event.target !== box) highlight(edge.id);
      });
    }
  }

  function setAll(ticked) {
    state.excluded = new Set(ticked ? [] : state.graph.edges.map((edge) => edge.id));
    for (const box of $("flows").querySelectorAll("input[type=checkbox]")) box.checked = ticked;
    for (const row of $("flows").tBodies[0].rows) row.classList.toggle("excluded", !ticked);
    select();
  }

  function showSelection(answer) {
    state.yaml = answer.yaml;
    state.changes = answer.changes;
    $("yaml").textContent = answer.yaml;
    $("copy").disabled = false;
    $("download").disabled = false;
    const ticked = state.graph.edges.length - state.excluded.size;
    const p = answer.preview;
    const plural = answer.policies === 1 ? "y" : "ies";
    const isolating = answer.isolating === 0 ? ""
      : ` (${answer.isolating} isolate pods that no policy isolates today)`;
    $("summary").textContent = `${answer.policies} NetworkPolic${plural} for the ${ticked} `
      + `ticked flows${isolating}. With them, ${p.newly_denied} flows allowed today would be `
      + `blocked, ${p.still_denied} stay blocked, ${p.newly_allowed} denied today would be `
      + `allowed, ${p.kept} stay allowed.`;
    $("issues").replaceChildren(...answer.issues.map((issue) => {
      const item = document.createElement("li");
      item.textContent = `Not suggested: ${issue}`;
      return item;
    }));
    $("issues").hidden = answer.issues.length === 0;
    for (const row of $("flows").tBodies[0].rows) {
      const change = answer.changes[row.dataset.flow] || "unknown";
      row.dataset.change = change;
      const cell = row.querySelector(".change");
      cell.textContent = CHANGES[change];
      cell.className = `change ${change}`;
    }
    if (state.cy) {
      state.cy.batch(() => {
        for (const edge of state.graph.edges) {
          const element = state.cy.getElementById(`flow-${edge.id}`);
          element.removeClass("newly_denied newly_allowed");
          const change = answer.changes[edge.id];
          if (change === "newly_denied" || change === "newly_allowed") element.addClass(change);
          element.data("label", edgeLabel(edge));
        }
      });
    }
  }

  async function select() {
    const request = ++state.request;
    document.body.dataset.pending = "1";
    try {
      const answer = await api("api/selection", { excluded: [...state.excluded].sort() });
      // A newer selection is on its way: show that one.
      if (request === state.request) showSelection(answer);
    } catch (error) {
      if (request === state.request) problem(error.message);
    } finally {
      if (request === state.request) document.body.dataset.pending = "0";
    }
  }

  function flash(text) {
    $("copied").textContent = text;
    setTimeout(() => { $("copied").textContent = ""; }, 3000);
  }

  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(state.yaml);
      flash("Copied.");
    } catch {
      // No clipboard access: select the text for Ctrl-C.
      const range = document.createRange();
      range.selectNodeContents($("yaml"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      flash("Selected: press Ctrl-C to copy.");
    }
  });
  $("download").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([state.yaml], { type: "application/yaml" }));
    const link = document.createElement("a");
    link.href = url;
    link.download = "kube-nftpol-policies.yaml";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  $("tick-all").addEventListener("click", () => setAll(true));
  $("untick-all").addEventListener("click", () => setAll(false));

  async function start() {
    let data;
    try {
      data = await api("api/graph");
    } catch (error) {
      problem(error.message);
      placeholder($("graph"), "Nothing to draw: the flows could not be loaded.");
      document.body.dataset.state = "failed";
      return;
    }
    $("origin").textContent = data.origin;
    data.problems.forEach(problem);
    state.graph = data.graph;
    for (const group of data.graph.groups) state.groups.set(group.id, group);
    for (const node of data.graph.nodes) state.nodes.set(node.id, node);
    if (data.graph.edges.length === 0) {
      placeholder($("graph"), "No flows to draw (see the problems above).");
      const cell = $("flows").tBodies[0].rows[0].cells[0];
      cell.textContent = "No flows.";
      $("summary").textContent = "No flows, so no policies to suggest.";
      document.body.dataset.state = "empty";
      return;
    }
    for (const edge of data.graph.edges) if (isExternal(edge)) state.excluded.add(edge.id);
    drawTable();
    try {
      drawGraph();
    } catch (error) {
      placeholder($("graph"), "The graph could not be drawn; the flows and policies still work.");
      problem(`Drawing the graph failed: ${error.message}`);
    }
    await select();
    document.body.dataset.state = "ready";
  }

  start();
})();
