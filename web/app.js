// SCCR wall dashboard: live map of the road segments coloured by Level of Service, KPI
// tiles, alerts with acknowledgement, segment and planner charts. Plain browser
// JavaScript, no build step; Leaflet and uPlot are vendored under vendor/.
'use strict';
(() => {
  const I18N = window.SCCR_I18N;
  const LOS = ['A', 'B', 'C', 'D', 'E', 'F'];
  // Same bounds as the server's stream::los: speed / free-flow speed above each bound.
  const LOS_BOUNDS = [[0.85, 'A'], [0.67, 'B'], [0.5, 'C'], [0.4, 'D'], [0.3, 'E']];
  const METRICS = ['speed_kmh', 'vehicle_count', 'occupancy_pct', 'headway_s', 'no2_ugm3', 'pm10_ugm3', 'pm25_ugm3',
    'o3_ugm3', 'temperature_c', 'humidity_pct', 'free_spaces', 'battery_v', 'rssi_dbm'];
  const SPEED_FRESH_MS = 90_000; // a device's last speed counts towards its segment's live LOS this long
  const DEVICE_ONLINE_MS = 120_000; // a device with no value for this long counts as offline
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const LOS_COLOUR = {};
  const $ = (id) => document.getElementById(id);

  const state = {
    lang: localStorage.getItem('sccr.lang') || ((navigator.language || 'en').startsWith('it') ? 'it' : 'en'),
    token: localStorage.getItem('sccr.token') || '',
    me: null, // {name, role}; role 'none' when the server has no authentication
    segments: new Map(), // id -> {id, props, layer, window, speeds: Map(device -> {v, t}), los}
    devices: new Map(), // id -> {id, kind, segment, last, marker, online}
    alerts: new Map(), // open alerts by id
    kpi: null, kpiAt: 0, kpiUnsupported: false,
    valueTimes: [], // arrival times (ms) of recent values, for the client-side reading rate
    ws: null, attempt: 0, retryAt: 0, everOpen: false,
    dirtySegments: new Set(), alertsDirty: false, frameQueued: false,
    selected: null, detailChart: null, plannerChart: null,
    ackOpen: null, // alert id whose note form is open
  };
  window.sccr = { state, ready: false, frames: 0, losOf: (id) => state.segments.get(id)?.los ?? null };

  // ---------- i18n ----------
  function t(key, params) {
    let s = (I18N[state.lang] && I18N[state.lang][key]) ?? I18N.en[key] ?? key;
    if (params) for (const [k, v] of Object.entries(params)) s = s.replace(`{${k}}`, v);
    return s;
  }
  function applyLang() {
    document.documentElement.lang = state.lang;
    document.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll('.lang button').forEach((b) => b.classList.toggle('on', b.dataset.lang === state.lang));
    renderLegend();
    renderConnState();
    renderAlerts();
    renderKpis();
    if (state.selected) renderDetailFigures();
    fillPlannerSubjects();
  }

  // ---------- REST ----------
  function authHeaders() {
    return state.token ? { Authorization: `Bearer ${state.token}` } : {};
  }
  async function api(path, opts = {}) {
    const res = await fetch(path, { ...opts, headers: { ...authHeaders(), ...(opts.headers || {}) } });
    if (res.status === 401) {
      showLogin(true);
      throw new Error('unauthorized');
    }
    return res;
  }
  async function apiJson(path, opts) {
    const res = await api(path, opts);
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message || `${res.status}`);
    return body;
  }

  // ---------- roles ----------
  const role = () => state.me?.role ?? 'none';
  const canAct = () => ['none', 'admin', 'operator'].includes(role());
  const canExport = () => ['none', 'admin', 'planner'].includes(role());

  async function whoAmI() {
    const res = await fetch('/api/v1/me', { headers: authHeaders() });
    if (res.status === 404) return { name: 'operator', role: 'none' }; // no authentication on this server
    if (res.status === 401 || res.status === 403) return null;
    if (!res.ok) throw new Error(`/api/v1/me: ${res.status}`);
    return res.json();
  }
  function showLogin(bad) {
    const dlg = $('login');
    $('login-error').hidden = !bad || !state.token;
    $('login-error').textContent = t('login_bad');
    if (!dlg.open) dlg.showModal();
  }
  function applyRole() {
    $('user').textContent = state.me && state.me.role !== 'none' ? `${state.me.name} · ${state.me.role}` : '';
    $('logout').hidden = !state.token;
    $('downloads').hidden = !canExport();
    document.body.dataset.role = role();
  }

  // ---------- LOS ----------
  function losOfRatio(r) {
    if (!Number.isFinite(r) || r < 0) return null;
    for (const [bound, los] of LOS_BOUNDS) if (r > bound) return los;
    return 'F';
  }
  function liveSpeed(seg, now) {
    let sum = 0;
    let n = 0;
    for (const s of seg.speeds.values()) {
      if (now - s.t < SPEED_FRESH_MS) { sum += s.v; n += 1; }
    }
    return n ? sum / n : null;
  }
  // The segment's current grade: from its detectors' latest speeds while they are fresh
  // (a reading recolours the map at once), else from the last closed window.
  function currentLos(seg, now) {
    const v = liveSpeed(seg, now);
    if (v !== null && seg.props.free_flow_kmh > 0) return losOfRatio(v / seg.props.free_flow_kmh);
    return seg.window?.los ?? null;
  }
  function currentSpeed(seg, now) {
    const v = liveSpeed(seg, now);
    return v !== null ? v : seg.window?.speed_kmh ?? null;
  }

  // ---------- map ----------
  let map;
  let markerRenderer;
  function lineWeight() {
    return Math.max(3, parseFloat(getComputedStyle(document.documentElement).fontSize) * 0.42);
  }
  function initMap() {
    map = L.map('map', { zoomControl: true, attributionControl: true, zoomSnap: 0.25, preferCanvas: false });
    map.attributionControl.setPrefix('Leaflet');
    // Device markers on a canvas above the segment lines.
    map.createPane('devices').style.zIndex = 450;
    markerRenderer = L.canvas({ padding: 0.2, pane: 'devices' });
    map.setView([43.7731, 11.2560], 14);
    map.on('click', () => closeDetail());
  }
  function drawSegments(collection) {
    for (const seg of state.segments.values()) seg.layer.remove();
    state.segments.clear();
    const bounds = L.latLngBounds([]);
    const weight = lineWeight();
    for (const f of collection.features || []) {
      const p = f.properties || {};
      const coords = (f.geometry?.coordinates || []).map(([lon, lat]) => [lat, lon]);
      if (coords.length < 2) continue;
      const id = p.id ?? f.id;
      const seg = { id, props: p, speeds: new Map(), los: null, window: null, layer: null, coords };
      if (p.los !== undefined && p.window) {
        seg.window = { los: p.los, speed_kmh: p.speed_kmh, flow_vph: p.flow_vph, occupancy_pct: p.occupancy_pct, detectors: p.detectors, start: p.window.start, end: p.window.end };
      }
      const outline = L.polyline(coords, { color: '#000', weight: weight + 3, opacity: 0.6, interactive: false });
      const line = L.polyline(coords, { color: LOS_COLOUR.none, weight, opacity: 0.95, lineCap: 'round' });
      seg.layer = L.layerGroup([outline, line]).addTo(map);
      seg.line = line;
      line.on('click', (e) => { L.DomEvent.stopPropagation(e); openDetail(id); });
      line.bindTooltip(() => tooltipText(seg), { className: 'seg-tip', sticky: true });
      const el = line.getElement();
      if (el) el.setAttribute('data-segment', id);
      for (const c of coords) bounds.extend(c);
      state.segments.set(id, seg);
      state.dirtySegments.add(id);
    }
    if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30] });
    scheduleFrame();
  }
  function tooltipText(seg) {
    const v = currentSpeed(seg, Date.now());
    return `${seg.props.name || seg.id} · LOS ${seg.los ?? '–'}${v !== null ? ` · ${v.toFixed(0)} km/h` : ''}`;
  }
  function styleSegment(seg, now) {
    const los = currentLos(seg, now);
    if (los === seg.los && seg.styled) return;
    seg.los = los;
    seg.styled = true;
    const colour = LOS_COLOUR[los] || LOS_COLOUR.none;
    seg.line.setStyle({ color: colour });
    const el = seg.line.getElement();
    if (el) el.setAttribute('data-los', los ?? '');
  }
  // Where a device's marker sits: spread along its segment by its index there.
  function devicePosition(dev) {
    const seg = state.segments.get(dev.segment);
    if (!seg) return null;
    const n = seg.devIndex = (seg.devIndex ?? 0) + 1;
    const c = seg.coords;
    const i = Math.min(c.length - 1, Math.floor(((n * 0.618) % 1) * c.length));
    return c[i];
  }
  function drawDevices(list) {
    for (const d of state.devices.values()) d.marker?.remove();
    state.devices.clear();
    for (const seg of state.segments.values()) seg.devIndex = 0;
    const r = Math.max(3, parseFloat(getComputedStyle(document.documentElement).fontSize) * 0.3);
    for (const rec of list) {
      const dev = { id: rec.id, kind: rec.kind, segment: rec.segment, last: 0, online: null, marker: null };
      const pos = devicePosition(dev);
      if (pos) {
        dev.marker = L.circleMarker(pos, { renderer: markerRenderer, radius: r, weight: 1.5, color: '#000', fillColor: cssVar('--off'), fillOpacity: 1, interactive: false }).addTo(map);
      }
      state.devices.set(rec.id, dev);
    }
  }
  function offlineByAlert() {
    const s = new Set();
    for (const a of state.alerts.values()) if (a.subject?.device && /offline/i.test(a.rule)) s.add(a.subject.device);
    return s;
  }
  function refreshDevices(now) {
    const down = offlineByAlert();
    let online = 0;
    for (const d of state.devices.values()) {
      const on = now - d.last < DEVICE_ONLINE_MS && !down.has(d.id);
      if (on) online += 1;
      if (on !== d.online) {
        d.online = on;
        d.marker?.setStyle({ fillColor: on ? cssVar('--ok') : cssVar('--off') });
      }
    }
    return { online, offline: state.devices.size - online };
  }
  function renderLegend() {
    const rows = LOS.map((l) => `<div class="row"><span class="sw" style="background:${LOS_COLOUR[l]}"></span>${l}</div>`).join('');
    $('legend').innerHTML = `<h4>${t('legend_los')}</h4>${rows}<div class="row"><span class="sw" style="background:${LOS_COLOUR.none}"></span>${t('legend_nodata')}</div>`
      + `<div class="row"><span class="dot" style="background:${cssVar('--ok')}"></span>${t('legend_online')}</div>`
      + `<div class="row"><span class="dot" style="background:${cssVar('--off')}"></span>${t('legend_offline')}</div>`;
  }

  // ---------- segment detail ----------
  function openDetail(id) {
    state.selected = id;
    const seg = state.segments.get(id);
    if (!seg) return;
    $('detail').hidden = false;
    $('detail-name').textContent = seg.props.name || id;
    renderDetailFigures();
    loadDetailChart(id);
  }
  function closeDetail() {
    state.selected = null;
    $('detail').hidden = true;
    state.detailChart?.destroy();
    state.detailChart = null;
  }
  const fmt = (v, d = 0) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
  function renderDetailFigures() {
    const seg = state.segments.get(state.selected);
    if (!seg) return;
    const now = Date.now();
    const w = seg.window || {};
    const los = seg.los;
    const badge = `<span class="los-badge" style="background:${LOS_COLOUR[los] || LOS_COLOUR.none}">${los ?? '–'}</span>`;
    $('detail-figures').innerHTML = [
      [t('los'), badge],
      [`${t('speed')} (${t('live_estimate')})`, `${fmt(currentSpeed(seg, now))} <small>km/h</small>`],
      [t('flow'), `${fmt(w.flow_vph)} <small>veh/h</small>`],
      [t('occupancy'), `${fmt(w.occupancy_pct, 1)} <small>%</small>`],
    ].map(([l, v]) => `<div class="fig"><div class="l">${l}</div><div class="v">${v}</div></div>`).join('');
  }
  function chartOpts(width, height, unit, from, to) {
    const fs = parseFloat(getComputedStyle(document.documentElement).fontSize);
    const axis = { stroke: cssVar('--muted'), grid: { stroke: '#263241', width: 1 }, ticks: { stroke: '#263241' }, font: `${Math.round(fs * 0.85)}px DejaVu Sans, sans-serif`, size: fs * 3.2 };
    const x = { ...axis, space: fs * 5 };
    const y = { ...axis, space: fs * 2.2, label: unit, labelFont: axis.font, labelSize: fs * 1.4 };
    return {
      width, height,
      scales: {
        x: { time: true, range: [from / 1000, to / 1000] },
        y: { range: (u, min, max) => (min === null || max === null ? [0, 1] : uPlot.rangeNum(min, max, 0.1, true)) },
      },
      axes: [x, y],
      series: [{}, { label: unit, stroke: cssVar('--accent'), width: Math.max(1.5, fs * 0.14), fill: 'rgba(88,166,255,0.12)', spanGaps: false }],
      legend: { show: false },
      cursor: { drag: { x: true, y: false } },
    };
  }
  async function history(params) {
    const q = new URLSearchParams(params);
    return apiJson(`/api/v1/history?${q}`);
  }
  function toSeries(h) {
    const xs = [];
    const ys = [];
    for (const p of h.points || []) { xs.push(p.t / 1000); ys.push(p.v ?? null); }
    return [xs, ys];
  }
  async function loadDetailChart(id) {
    const el = $('detail-chart');
    const width = el.clientWidth || 500;
    const now = Date.now();
    try {
      const from = now - 24 * 3600_000;
      const h = await history({ segment: id, metric: 'speed_kmh', from, to: now, step: 'auto', max_points: Math.max(50, Math.round(width)) });
      if (state.selected !== id) return;
      state.detailChart?.destroy();
      el.innerHTML = '';
      state.detailChart = new uPlot(chartOpts(width, Math.round(width * 0.42), 'km/h', from, now), toSeries(h), el);
    } catch (e) {
      if (state.selected === id) el.textContent = t('error', { m: e.message });
    }
  }

  // ---------- alerts ----------
  const SEV_RANK = { critical: 0, warning: 1, info: 2 };
  function alertArea(a) {
    if (a.subject?.segment) return a.subject.segment;
    if (a.subject?.device) return state.devices.get(a.subject.device)?.segment ?? '';
    return '';
  }
  function subjectText(a) {
    if (a.subject?.segment) return state.segments.get(a.subject.segment)?.props.name || a.subject.segment;
    if (a.subject?.device) return a.subject.device;
    return t('rule');
  }
  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 120) return t('ago_s', { n: s });
    if (s < 7200) return t('ago_m', { n: Math.round(s / 60) });
    return t('ago_h', { n: Math.round(s / 3600) });
  }
  function upsertAlert(a, live) {
    const known = state.alerts.has(a.id);
    if (a.state === 'cleared') state.alerts.delete(a.id);
    else state.alerts.set(a.id, { ...a, fresh: live && !known });
    if (live && !known && a.state === 'raised' && a.severity === 'critical') signalCritical();
    state.alertsDirty = true;
    scheduleFrame();
  }
  function signalCritical() {
    const panel = $('alerts-panel');
    panel.classList.remove('pulse');
    void panel.offsetWidth; // restart the animation
    panel.classList.add('pulse');
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      const ctx = signalCritical.ctx || (signalCritical.ctx = new Ctx());
      if (ctx.state !== 'running') return; // browsers allow sound only after a user gesture
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.2, ctx.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.6);
      osc.connect(gain).connect(ctx.destination);
      osc.start();
      osc.stop(ctx.currentTime + 0.6);
    } catch (_) { /* no sound available */ }
  }
  function esc(s) {
    return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }
  function renderAreaFilter() {
    const sel = $('filter-area');
    const current = sel.value;
    const areas = new Set();
    for (const a of state.alerts.values()) { const ar = alertArea(a); if (ar) areas.add(ar); }
    const opts = [`<option value="">${esc(t('all_areas'))}</option>`];
    for (const id of [...areas].sort()) opts.push(`<option value="${esc(id)}">${esc(state.segments.get(id)?.props.name || id)}</option>`);
    sel.innerHTML = opts.join('');
    sel.value = areas.has(current) ? current : '';
  }
  function renderAlerts() {
    state.alertsDirty = false;
    if (document.activeElement?.closest?.('.alert .actions')) return; // keep the note being typed
    renderAreaFilter();
    const sev = $('filter-severity').value;
    const area = $('filter-area').value;
    const list = [...state.alerts.values()]
      .filter((a) => (!sev || a.severity === sev) && (!area || alertArea(a) === area))
      .sort((a, b) => b.raised_at - a.raised_at || b.id - a.id);
    $('alerts-empty').hidden = list.length > 0;
    $('alert-list').innerHTML = list.slice(0, 200).map((a) => {
      const acked = a.acknowledged ? ` · ${esc(t('acked_by', { by: a.acknowledged.by }))}` : '';
      let actions = '';
      if (canAct()) {
        if (state.ackOpen === a.id) {
          actions = `<div class="actions"><input class="note" placeholder="${esc(t('note'))}" maxlength="2000">`
            + `<button type="button" data-act="confirm" data-id="${a.id}" data-kind="${state.ackKind}">${esc(t('confirm'))}</button>`
            + `<button type="button" data-act="cancel" data-id="${a.id}">${esc(t('cancel'))}</button></div>`;
        } else {
          actions = `<div class="actions">${a.state === 'raised' ? `<button type="button" data-act="ack" data-id="${a.id}">${esc(t('ack'))}</button>` : ''}`
            + `<button type="button" data-act="clear" data-id="${a.id}">${esc(t('clear'))}</button></div>`;
        }
      }
      return `<li class="alert ${esc(a.severity)}${a.fresh ? ' new' : ''}" data-alert="${a.id}" data-state="${esc(a.state)}">`
        + `<div class="msg">${esc(a.message)}</div>`
        + `<div class="meta"><span class="state ${esc(a.state)}">${esc(t(`state_${a.state}`))}</span><span>${esc(subjectText(a))}</span>`
        + `<span>${esc(ago(a.raised_at))}</span><span>${esc(a.rule)}${acked}</span></div>${actions}</li>`;
    }).join('');
    for (const a of state.alerts.values()) a.fresh = false;
    const note = $('alert-list').querySelector('input.note');
    if (note) note.focus();
  }
  // The server records the operator as the token's name; the body carries the note.
  async function operatorMove(id, kind, note) {
    const res = await api(`/api/v1/alerts/${id}/${kind}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ note }) });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message || `${res.status}`);
    if (body?.alert) upsertAlert(body.alert, false);
  }
  function onAlertClick(e) {
    const b = e.target.closest('button[data-act]');
    if (!b) return;
    const id = Number(b.dataset.id);
    const act = b.dataset.act;
    if (act === 'ack' || act === 'clear') {
      state.ackOpen = id;
      state.ackKind = act;
      b.blur();
      renderAlerts();
    } else if (act === 'cancel') {
      state.ackOpen = null;
      b.blur();
      renderAlerts();
    } else if (act === 'confirm') {
      const note = b.closest('.alert').querySelector('input.note')?.value?.trim() || null;
      b.disabled = true;
      operatorMove(id, b.dataset.kind, note)
        .then(() => { state.ackOpen = null; })
        .catch((err) => { b.closest('.alert').querySelector('.meta').append(` ${t('error', { m: err.message })}`); })
        .finally(() => { b.blur(); renderAlerts(); });
    }
  }

  // ---------- KPIs ----------
  function clientKpi(now) {
    const { online, offline } = refreshDevices(now);
    while (state.valueTimes.length && now - state.valueTimes[0][0] > 10_000) state.valueTimes.shift();
    const values = state.valueTimes.reduce((s, [, n]) => s + n, 0);
    const span = state.valueTimes.length ? Math.max(1000, now - state.valueTimes[0][0]) : 10_000;
    const open = { critical: 0, warning: 0, info: 0 };
    for (const a of state.alerts.values()) open[a.severity] = (open[a.severity] || 0) + 1;
    let sum = 0;
    let n = 0;
    const ranked = [];
    for (const seg of state.segments.values()) {
      const v = currentSpeed(seg, now);
      if (v === null) continue;
      sum += v;
      n += 1;
      const ratio = seg.props.free_flow_kmh > 0 ? v / seg.props.free_flow_kmh : 1;
      ranked.push({ segment: seg.id, name: seg.props.name, los: currentLos(seg, now), speed_kmh: v, ratio });
    }
    ranked.sort((a, b) => a.ratio - b.ratio);
    return {
      devices_online: online, devices_offline: offline,
      readings_per_s: state.valueTimes.length ? values / (span / 1000) : 0,
      alerts_open: open, city_speed_kmh: n ? sum / n : null, worst_segments: ranked.slice(0, 5),
    };
  }
  function renderKpis() {
    const now = Date.now();
    const local = clientKpi(now);
    const k = state.kpi && now - state.kpiAt < 5000 ? state.kpi : local;
    $('kpi-online').textContent = k.devices_online ?? '–';
    $('kpi-offline').textContent = k.devices_offline ?? '–';
    $('kpi-rps').textContent = fmt(k.readings_per_s, k.readings_per_s < 10 ? 1 : 0);
    $('kpi-city-speed').textContent = fmt(k.city_speed_kmh);
    $('kpi-crit').textContent = k.alerts_open?.critical ?? 0;
    $('kpi-warn').textContent = k.alerts_open?.warning ?? 0;
    $('kpi-info').textContent = k.alerts_open?.info ?? 0;
    $('worst-list').innerHTML = (k.worst_segments || []).map((w) => `<li data-segment="${esc(w.segment)}">`
      + `<span class="los-badge" style="background:${LOS_COLOUR[w.los] || LOS_COLOUR.none}">${esc(w.los ?? '–')}</span>`
      + `<span class="name">${esc(w.name || state.segments.get(w.segment)?.props.name || w.segment)}</span>`
      + `<span class="spd">${fmt(w.speed_kmh)} km/h</span></li>`).join('');
    document.body.dataset.kpiSource = k === local ? 'client' : 'server';
  }

  // ---------- live websocket ----------
  function onValues(values, counted) {
    const now = Date.now();
    if (counted) state.valueTimes.push([now, values.length]);
    for (const v of values) {
      const dev = state.devices.get(v.device);
      if (dev) { if (v.time > dev.last) dev.last = Math.min(v.time, now); }
      if (v.metric !== 'speed_kmh' || !dev?.segment) continue;
      const seg = state.segments.get(dev.segment);
      if (!seg) continue;
      const prev = seg.speeds.get(v.device);
      if (!prev || v.time >= prev.t) {
        seg.speeds.set(v.device, { v: v.value, t: v.time });
        state.dirtySegments.add(seg.id);
      }
    }
    scheduleFrame();
  }
  function onSegmentState(s) {
    const seg = state.segments.get(s.segment);
    if (!seg) return;
    if (seg.window && (s.start < seg.window.start || (s.start === seg.window.start && s.revision < seg.window.revision))) return;
    seg.window = s;
    state.dirtySegments.add(seg.id);
    scheduleFrame();
  }
  function onFrame(msg) {
    window.sccr.frames += 1;
    switch (msg.type) {
      case 'snapshot':
        onValues(msg.values || [], false);
        for (const s of msg.segments || []) onSegmentState(s);
        if (msg.alerts) {
          state.alerts.clear();
          for (const a of msg.alerts) upsertAlert(a, false);
        }
        renderKpis();
        window.sccr.ready = true;
        document.body.dataset.ready = 'true';
        break;
      case 'delta': onValues(msg.values || [], true); break;
      case 'segment': onSegmentState(msg.segment); break;
      case 'alert': upsertAlert(msg.alert, true); break;
      case 'kpi': state.kpi = msg.kpi; state.kpiAt = Date.now(); break;
      case 'error':
        if (!state.kpiUnsupported && /kpi/.test(msg.message || '')) {
          // A server without KPI frames: subscribe without them and compute the tiles here.
          state.kpiUnsupported = true;
          subscribe();
        }
        break;
      default: break;
    }
  }
  function subscribe() {
    const sub = { type: 'subscribe', segments: [], alerts: true, values: true };
    if (!state.kpiUnsupported) sub.kpi = true;
    state.ws?.send(JSON.stringify(sub));
  }
  function connect() {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = state.token ? `?access_token=${encodeURIComponent(state.token)}` : '';
    let ws;
    try {
      ws = new WebSocket(`${proto}://${location.host}/api/v1/live${q}`);
    } catch (_) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    ws.onopen = () => {
      const wasDown = state.everOpen;
      state.everOpen = true;
      state.attempt = 0;
      setLive('open');
      subscribe();
      if (wasDown) reloadStatic();
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      onFrame(msg);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      setLive('closed');
      scheduleReconnect();
    };
    ws.onerror = () => { /* onclose follows */ };
  }
  function scheduleReconnect() {
    state.attempt += 1;
    // 0.5 s, 1 s, 2 s, … up to 5 s, with jitter so a wall of screens does not reconnect in step.
    const base = Math.min(5000, 500 * 2 ** (state.attempt - 1));
    const delay = base * (0.8 + Math.random() * 0.4);
    state.retryAt = Date.now() + delay;
    renderBanner();
    setTimeout(connect, delay);
  }
  // After a reconnection the server may have restarted: devices, segments and alerts are
  // read again (the snapshot of the new subscription brings the live state).
  async function reloadStatic() {
    try {
      const [devs, alerts] = await Promise.all([apiJson('/api/v1/devices'), apiJson('/api/v1/alerts?state=open&limit=1000')]);
      const last = new Map([...state.devices.values()].map((d) => [d.id, d.last]));
      drawDevices(devs.devices || []);
      for (const [id, l] of last) { const d = state.devices.get(id); if (d) d.last = l; }
      for (const a of alerts.alerts || []) upsertAlert(a, false);
    } catch (_) { /* the next reconnection tries again */ }
  }
  function setLive(s) {
    document.body.dataset.live = s;
    renderConnState();
    renderBanner();
  }
  function renderConnState() {
    const s = document.body.dataset.live;
    $('conn-state').textContent = t(s === 'open' ? 'conn_open' : s === 'closed' ? 'conn_closed' : 'conn_connecting');
  }
  function renderBanner() {
    const b = $('conn-banner');
    if (document.body.dataset.live !== 'closed') { b.hidden = true; return; }
    const s = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
    b.textContent = s > 0 ? t('banner_lost', { s, n: state.attempt }) : t('banner_retrying', { n: state.attempt });
    b.hidden = false;
  }

  // ---------- frame loop: map restyling and alert list batched per animation frame ----------
  function scheduleFrame() {
    if (state.frameQueued) return;
    state.frameQueued = true;
    requestAnimationFrame(() => {
      state.frameQueued = false;
      const now = Date.now();
      for (const id of state.dirtySegments) { const seg = state.segments.get(id); if (seg) styleSegment(seg, now); }
      state.dirtySegments.clear();
      if (state.alertsDirty) renderAlerts();
    });
  }
  function tick() {
    const now = Date.now();
    $('clock').textContent = new Date(now).toLocaleTimeString(state.lang === 'it' ? 'it-IT' : 'en-GB');
    // Live speeds age out: re-grade every segment once a second.
    for (const id of state.segments.keys()) state.dirtySegments.add(id);
    scheduleFrame();
    renderKpis();
    renderBanner();
    if (state.selected) renderDetailFigures();
  }

  // ---------- planner ----------
  function fillPlannerSubjects() {
    const kind = $('p-kind').value;
    $('p-subject-wrap').hidden = kind === 'city';
    const sel = $('p-subject');
    const current = sel.value;
    let items = [];
    if (kind === 'segment') items = [...state.segments.values()].map((s) => [s.id, s.props.name || s.id]).sort((a, b) => a[1].localeCompare(b[1]));
    if (kind === 'device') items = [...state.devices.keys()].sort().map((d) => [d, d]);
    sel.innerHTML = items.map(([v, l]) => `<option value="${esc(v)}">${esc(l)}</option>`).join('');
    if (items.some(([v]) => v === current)) sel.value = current;
  }
  function plannerQuery() {
    const kind = $('p-kind').value;
    const q = { metric: $('p-metric').value, step: 'auto' };
    if (kind !== 'city') q[kind] = $('p-subject').value;
    const r = $('p-range').value;
    const now = Date.now();
    if (r === 'custom') {
      q.from = new Date($('p-from').value).getTime() || now - 24 * 3600_000;
      q.to = new Date($('p-to').value).getTime() || now;
    } else {
      const n = parseInt(r, 10);
      q.from = now - n * (r.endsWith('d') ? 86_400_000 : 3_600_000);
      q.to = now;
    }
    return q;
  }
  async function showPlanner() {
    const el = $('planner-chart');
    const width = el.clientWidth || 1200;
    const q = { ...plannerQuery(), max_points: Math.max(100, Math.min(5000, Math.round(width))) };
    try {
      const h = await history(q);
      state.plannerChart?.destroy();
      el.innerHTML = '';
      const height = Math.max(200, el.clientHeight - 10);
      state.plannerChart = new uPlot(chartOpts(width, height, h.unit || q.metric, q.from, q.to), toSeries(h), el);
      const step = h.step_ms ? `${h.step_ms / 1000} s` : 'raw';
      $('planner-info').textContent = h.points.length ? t('planner_info', { n: h.points.length, res: h.resolution, step }) : t('planner_none');
    } catch (e) {
      $('planner-info').textContent = t('error', { m: e.message });
    }
  }
  async function download(format) {
    const q = new URLSearchParams({ ...plannerQuery(), format });
    try {
      const res = await api(`/api/v1/history?${q}`);
      if (!res.ok) {
        const body = await res.json().catch(() => null);
        throw new Error(body?.error?.message || `${res.status}`);
      }
      const blob = await res.blob();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `sccr-${q.get('segment') || q.get('device') || 'city'}-${q.get('metric')}.${format}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    } catch (e) {
      $('planner-info').textContent = t('error', { m: e.message });
    }
  }
  function setView(v) {
    document.body.dataset.view = v;
    $('view-live').hidden = v !== 'live';
    $('view-planner').hidden = v !== 'planner';
    if (v === 'live') map.invalidateSize();
    if (v === 'planner') { fillPlannerSubjects(); if (!state.plannerChart) showPlanner(); }
    history_replace(v);
  }
  function history_replace(v) {
    const url = new URL(location.href);
    url.hash = v === 'live' ? '' : v;
    window.history.replaceState(null, '', url);
  }

  // ---------- start ----------
  function wire() {
    document.querySelectorAll('.lang button').forEach((b) => b.addEventListener('click', () => {
      state.lang = b.dataset.lang;
      localStorage.setItem('sccr.lang', state.lang);
      applyLang();
    }));
    document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => setView(b.dataset.tab)));
    $('alert-list').addEventListener('click', onAlertClick);
    $('alert-list').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && e.target.matches('input.note')) e.target.closest('.alert').querySelector('[data-act="confirm"]')?.click();
    });
    $('filter-severity').addEventListener('change', renderAlerts);
    $('filter-area').addEventListener('change', renderAlerts);
    $('worst-list').addEventListener('click', (e) => { const li = e.target.closest('li[data-segment]'); if (li) openDetail(li.dataset.segment); });
    $('detail-close').addEventListener('click', closeDetail);
    $('p-kind').addEventListener('change', fillPlannerSubjects);
    $('p-range').addEventListener('change', () => document.querySelectorAll('.planner-form .custom').forEach((el) => { el.hidden = $('p-range').value !== 'custom'; }));
    $('planner-form').addEventListener('submit', (e) => { e.preventDefault(); showPlanner(); });
    $('dl-csv').addEventListener('click', () => download('csv'));
    $('dl-parquet').addEventListener('click', () => download('parquet'));
    $('p-metric').innerHTML = METRICS.map((m) => `<option value="${m}">${m}</option>`).join('');
    $('logout').addEventListener('click', () => { localStorage.removeItem('sccr.token'); location.reload(); });
    $('login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      state.token = $('login-token').value.trim();
      localStorage.setItem('sccr.token', state.token);
      const me = await whoAmI().catch(() => null);
      if (!me) { showLogin(true); return; }
      $('login').close();
      if (!started) start(me);
    });
    // Sound needs a user gesture: any click on the page arms it for critical alerts.
    document.addEventListener('click', () => {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      const ctx = signalCritical.ctx || (signalCritical.ctx = new Ctx());
      if (ctx.state === 'suspended') ctx.resume().catch(() => {});
    }, { once: true });
  }
  let started = false;
  async function start(me) {
    started = true;
    state.me = me;
    applyRole();
    try {
      const [segs, devs, alerts] = await Promise.all([apiJson('/api/v1/segments'), apiJson('/api/v1/devices'), apiJson('/api/v1/alerts?state=open&limit=1000')]);
      drawSegments(segs);
      drawDevices(devs.devices || []);
      for (const a of alerts.alerts || []) upsertAlert(a, false);
    } catch (e) {
      console.warn('initial load failed', e);
    }
    fillPlannerSubjects();
    connect();
    setInterval(tick, 1000);
    tick();
    if (location.hash === '#planner') setView('planner');
  }
  async function main() {
    for (const l of LOS) LOS_COLOUR[l] = cssVar(`--los-${l}`);
    LOS_COLOUR.none = cssVar('--los-none');
    initMap();
    wire();
    applyLang();
    let me = null;
    try { me = await whoAmI(); } catch (e) { console.warn(e); }
    if (!me) { showLogin(Boolean(state.token)); return; }
    start(me);
  }
  main();
})();
