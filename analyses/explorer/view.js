// The patch explorer: one image's patch grid drawn through its tokens' own boxes, a
// heatmap of one measure per depth over it, and, for the patch under the pointer, what the
// model makes of it at every depth. An anywidget front-end module (render({model, el}));
// the self-contained page calls the same render with a model that holds the data.

const SCALE = [
  [0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
  [0.369, 0.789, 0.383], [0.993, 0.906, 0.144],
]; // viridis, five stops

function colour(t, alpha) {
  const x = Math.min(1, Math.max(0, t)) * (SCALE.length - 1);
  const i = Math.min(SCALE.length - 2, Math.floor(x));
  const f = x - i;
  const c = SCALE[i].map((v, k) => Math.round(255 * (v + f * (SCALE[i + 1][k] - v))));
  return `rgba(${c[0]},${c[1]},${c[2]},${alpha})`;
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key === "class") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function shown(value, measure) {
  if (value === null || value === undefined) return "";
  if (measure && measure.integer) return String(Math.round(value));
  if (Math.abs(value) >= 100) return value.toFixed(0);
  return Number(value.toPrecision(3)).toString();
}

// The token of a layout under pixel (y, x): the smallest box holding it, crops first.
function tokenAt(layout, y, x) {
  let best = -1, area = Infinity, crop = -1;
  layout.boxes.forEach((b, t) => {
    if (y < b[0] || y >= b[2] || x < b[1] || x >= b[3]) return;
    const a = (b[2] - b[0]) * (b[3] - b[1]);
    const c = layout.crops[t];
    if (a < area - 1e-6 || (Math.abs(a - area) <= 1e-6 && c > crop)) {
      best = t; area = a; crop = c;
    }
  });
  return best;
}

function render({ model, el }) {
  const data = model.get("data");
  const state = {
    image: 0, condition: data.conditions[0], depth: 0, measure: null, point: null, pinned: false,
  };
  const lmSites = new Set(data.measures.flatMap((m) => m.sites));
  state.measure = (data.measures[0] || {}).key || null;
  const root = element("div", { class: "vi-root" });
  el.appendChild(root);

  // ----- controls -------------------------------------------------------------------
  const condition = element("select", { "data-role": "condition" },
    data.conditions.map((c) => element("option", { value: c, text: c })));
  const measure = element("select", { "data-role": "measure" },
    data.measures.map((m) => element("option", { value: m.key, text: m.title })));
  const depth = element("input", {
    type: "range", min: 0, max: data.sites.length - 1, step: 1, value: 0, "data-role": "depth",
  });
  const depthName = element("span", { class: "vi-depth", "data-role": "depth-name" });
  const filters = Object.entries(data.attributes).map(([name, classes]) =>
    element("label", { class: "vi-filter" }, [
      document.createTextNode(`${name} `),
      element("select", { "data-role": "filter", "data-attribute": name }, [
        element("option", { value: "", text: "any" }),
        ...classes.map((c) => element("option", { value: c, text: c })),
      ]),
    ]));
  root.appendChild(element("div", { class: "vi-controls" }, [
    element("label", {}, [document.createTextNode("condition "), condition]),
    element("label", {}, [document.createTextNode("heatmap "), measure]),
    element("label", {}, [document.createTextNode("depth "), depth, depthName]),
    ...filters,
  ]));

  // ----- thumbnails, picture, panel ---------------------------------------------------
  const strip = element("div", { class: "vi-strip", "data-role": "strip" });
  data.images.forEach((image, k) => {
    const thumb = element("img", {
      src: image.picture, title: image.name, "data-image": String(k), class: "vi-thumb",
    });
    thumb.addEventListener("click", () => {
      state.image = k; state.point = null; state.pinned = false; draw();
    });
    strip.appendChild(thumb);
  });
  root.appendChild(strip);
  const picture = element("canvas", { class: "vi-picture", "data-role": "picture" });
  const overlay = element("canvas", { class: "vi-overlay", "data-role": "overlay" });
  const legend = element("div", { class: "vi-legend", "data-role": "legend" });
  const stage = element("div", { class: "vi-stage" }, [picture, overlay]);
  const panel = element("div", { class: "vi-panel", "data-role": "panel" });
  root.appendChild(element("div", { class: "vi-main" }, [
    element("div", {}, [stage, legend]), panel,
  ]));
  const pictures = data.images.map((image) => element("img", { src: image.picture }));

  function site() { return data.sites[state.depth]; }
  function layoutOf(image, s) { return data.layouts[image.layout[s]]; }
  function scaleOf(image) {
    const side = 420 / Math.max(image.size[0], image.size[1]);
    return { k: side, h: Math.round(image.size[0] * side), w: Math.round(image.size[1] * side) };
  }
  function valuesOf(image, cond, s, key) {
    const held = ((image.values[cond] || {})[s] || {});
    return held[key] || null;
  }
  function measureOf(key) { return data.measures.find((m) => m.key === key); }
  function transformed(v, m) {
    if (v === null || v === undefined) return null;
    return m && m.log ? Math.log10(Math.max(v, 1e-12)) : v;
  }

  function drawOverlay(image) {
    const { k, h, w } = scaleOf(image);
    overlay.width = w; overlay.height = h;
    const context = overlay.getContext("2d");
    context.clearRect(0, 0, w, h);
    const s = site();
    const layout = layoutOf(image, s);
    const m = measureOf(state.measure);
    const values = m && m.sites.includes(s) ? valuesOf(image, state.condition, s, m.key) : null;
    let low = Infinity, high = -Infinity;
    if (values) {
      for (const cond of data.conditions) { // one scale for every condition of this image
        for (const v of valuesOf(image, cond, s, m.key) || []) {
          const t = transformed(v, m);
          if (t !== null) { low = Math.min(low, t); high = Math.max(high, t); }
        }
      }
    }
    // Larger boxes first, so crops (finer boxes) lie on top of the base view.
    const order = layout.boxes.map((b, t) => t).sort((a, b) => {
      const area = (q) => (layout.boxes[q][2] - layout.boxes[q][0]) * (layout.boxes[q][3] - layout.boxes[q][1]);
      return area(b) - area(a);
    });
    let drawn = 0;
    for (const t of order) {
      const [y0, x0, y1, x1] = layout.boxes[t];
      if (y1 <= y0 || x1 <= x0) continue;
      const v = values ? transformed(values[t], m) : null;
      if (v !== null) {
        let u = high > low ? (v - low) / (high - low) : 0.5;
        if (m.reverse) u = 1 - u;
        context.fillStyle = colour(u, 0.6);
        context.fillRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
        drawn += 1;
      }
      context.strokeStyle = "rgba(255,255,255,0.35)";
      context.lineWidth = 1;
      context.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
    }
    if (state.point) {
      const t = tokenAt(layout, state.point[0], state.point[1]);
      if (t >= 0) {
        const [y0, x0, y1, x1] = layout.boxes[t];
        context.strokeStyle = "#ff00ff";
        context.lineWidth = 3;
        context.strokeRect(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k);
      }
    }
    overlay.dataset.site = s;
    overlay.dataset.condition = state.condition;
    overlay.dataset.measure = m ? m.key : "";
    overlay.dataset.coloured = String(drawn);
    legend.textContent = values
      ? `${m.title} at ${s} (${state.condition}): ` +
        (m.log ? `rank ${shown(10 ** low)} to ${shown(10 ** high)}` : `${shown(low)} to ${shown(high)}`) +
        (m.reverse ? " (bright: low)" : " (bright: high)")
      : `${m ? m.title : "no measure"}: none at ${s}`;
  }

  function cell(key, value, measure) {
    return element("td", {
      "data-key": key, "data-value": value === null || value === undefined ? "" : String(value),
      text: shown(value, measure),
    });
  }

  function drawPanel(image) {
    const started = performance.now();
    panel.replaceChildren();
    if (!state.point) {
      panel.appendChild(element("p", { text: "Point at a patch of the image (click to pin it)." }));
      return;
    }
    const [y, x] = state.point;
    const lensKeys = data.measures.filter((m) => m.key.startsWith("lens_rank:"));
    const head = ["depth", "token", "under it", "lens top words",
      ...lensKeys.map((m) => `rank: ${m.key.slice("lens_rank:".length)}`), "attn mean",
      "attn max", "top features", data.probe ? `probe: ${data.probe.attribute}` : "probe"];
    const rows = data.sites.map((s) => {
      const layout = layoutOf(image, s);
      const t = tokenAt(layout, y, x);
      const row = element("tr", { "data-site": s, "data-token": String(t) });
      if (t < 0) {
        row.appendChild(element("td", { text: s }));
        row.appendChild(element("td", { text: "none", colSpan: head.length - 1 }));
        return row;
      }
      const object = image.token_object[s][t];
      const label = object >= 0 ? image.objects[object] : object === -2 ? "padding" : "background";
      const words = ((image.top_words[state.condition] || {})[s] || [])[t] || [];
      const features = ((image.top_features[state.condition] || {})[s] || [])[t] || [];
      const value = (key) => { const v = valuesOf(image, state.condition, s, key); return v ? v[t] : null; };
      row.appendChild(element("td", { text: s }));
      const [r, c] = layout.grid[t];
      row.appendChild(element("td", { text: `${layout.crops[t] ? `crop ${layout.crops[t]} ` : ""}(${r}, ${c})` }));
      row.appendChild(element("td", { "data-key": "label", "data-value": String(object), text: label }));
      row.appendChild(element("td", { "data-key": "words", text: words.map((w) => data.words[w]).join(" ") }));
      for (const m of lensKeys) row.appendChild(cell(m.key, value(m.key), m));
      row.appendChild(cell("attention_mean", value("attention_mean")));
      row.appendChild(cell("attention_max", value("attention_max")));
      row.appendChild(element("td", {
        "data-key": "features", "data-value": features.map((f) => f[0]).join(" "),
        text: features.map((f) => `#${f[0]} ${shown(f[1])}`).join(", "),
      }));
      const predicted = value("probe_class");
      row.appendChild(element("td", {
        "data-key": "probe", "data-value": predicted === null ? "" : String(predicted),
        text: predicted === null ? "" :
          `${data.probe.classes[predicted]} (${shown(value("probe_confidence"))})`,
      }));
      return row;
    });
    const table = element("table", { class: "vi-table" }, [
      element("thead", {}, [element("tr", {}, head.map((h) => element("th", { text: h })))]),
      element("tbody", {}, rows),
    ]);
    panel.appendChild(element("p", {
      class: "vi-where",
      text: `${image.name}: pixel (${Math.floor(y)}, ${Math.floor(x)}) under ${state.condition}`,
    }));
    panel.appendChild(table);
    panel.dataset.image = String(state.image);
    panel.dataset.condition = state.condition;
    panel.dataset.renderMs = (performance.now() - started).toFixed(2);
  }

  function draw() {
    const image = data.images[state.image];
    const { h, w } = scaleOf(image);
    picture.width = w; picture.height = h;
    const context = picture.getContext("2d");
    context.imageSmoothingEnabled = false;
    const source = pictures[state.image];
    const paint = () => context.drawImage(source, 0, 0, w, h);
    if (source.complete) paint(); else source.onload = paint;
    stage.style.width = `${w}px`; stage.style.height = `${h}px`;
    depthName.textContent = site();
    strip.querySelectorAll("img").forEach((thumb, k) => {
      thumb.classList.toggle("vi-current", k === state.image);
    });
    drawOverlay(image);
    drawPanel(image);
    model.set("selection", {
      image: image.index, name: image.name, condition: state.condition, site: site(),
      measure: state.measure, pixel: state.point,
    });
    model.save_changes();
  }

  function pointOf(event) {
    const { k } = scaleOf(data.images[state.image]);
    const box = overlay.getBoundingClientRect();
    return [(event.clientY - box.top) / k, (event.clientX - box.left) / k];
  }
  // Hover shows the patch under the pointer until a click pins one (a click elsewhere
  // pins that one instead).
  overlay.addEventListener("click", (event) => {
    state.point = pointOf(event);
    state.pinned = true;
    draw();
  });
  overlay.addEventListener("mousemove", (event) => {
    if (state.pinned) return;
    state.point = pointOf(event);
    drawOverlay(data.images[state.image]);
    drawPanel(data.images[state.image]);
  });
  condition.addEventListener("change", () => { state.condition = condition.value; draw(); });
  measure.addEventListener("change", () => { state.measure = measure.value; draw(); });
  depth.addEventListener("input", () => { state.depth = Number(depth.value); draw(); });
  for (const holder of filters) {
    holder.querySelector("select").addEventListener("change", () => {
      const chosen = {};
      root.querySelectorAll("select[data-role=filter]").forEach((s) => {
        if (s.value) chosen[s.dataset.attribute] = s.value;
      });
      strip.querySelectorAll("img").forEach((thumb, k) => {
        const labels = data.images[k].labels;
        const keep = Object.entries(chosen).every(([a, v]) => String(labels[a]) === v);
        thumb.style.display = keep ? "" : "none";
      });
    });
  }
  if (lmSites.size) state.depth = data.sites.indexOf([...lmSites][0]);
  depth.value = String(state.depth);
  draw();
  // New data from Python (widget.data = ...): drawn afresh.
  const redraw = () => {
    model.off("change:data", redraw);
    el.replaceChildren();
    render({ model, el });
  };
  model.on("change:data", redraw);
  return () => model.off("change:data", redraw);
}

export default { render };
