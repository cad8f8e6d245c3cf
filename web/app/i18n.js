// @ts-check
// Interface texts in Italian and English, and every number, unit, time and alert message
// formatted for the chosen language. Metric labels and units come from the server's
// catalogue (GET /api/v1/catalogue), never from a copy here.

/** @typedef {{id: string, label: Record<string, string>, unit: string, unit_ascii?: string, decimals: number, min: number, max: number, kind: string, zero_based: boolean, aggregate?: string}} MetricInfo */

/** @type {Record<string, Record<string, string>>} */
const TEXT = {
  en: {
    title: 'Smart City Control Room', tab_live: 'Live', tab_planner: 'Planner', logout: 'Log out',
    conn_connecting: 'connecting', conn_open: 'live', conn_closed: 'offline',
    banner_lost: 'Live connection lost at {at} — figures are {age} old — reconnecting in {s} s (attempt {n})',
    banner_retrying: 'Live connection lost at {at} — figures are {age} old — reconnecting now (attempt {n})',
    stale_since: 'as of {at}', mode_wall: 'Wall', mode_desk: 'Desk',
    chart_24h: 'Speed, last 24 hours', usual_range: 'usual range', chart_unit: '{label} ({unit})',
    kpi_devices: 'Devices online', offline: 'offline', kpi_rate: 'Readings per second', kpi_speed: 'City mean speed', kpi_speed_short: 'Mean speed',
    kpi_alerts: 'Open alerts', unacked: '{n} to acknowledge', worst: 'Worst segments', worst_rule: 'by speed relative to free flow',
    alerts: 'Alerts', tab_active: 'Active', tab_shelved: 'Shelved', tab_suppressed: 'Suppressed', tab_history: 'History',
    all_severities: 'All severities', all_areas: 'All areas', sev_critical: 'Critical', sev_warning: 'Warning', sev_info: 'Info',
    no_alerts: 'No open alerts', no_shelved: 'No shelved alerts', no_suppressed: 'No suppressed alerts', no_history: 'No closed alerts yet',
    more_alerts: '+{n} more', ack: 'Acknowledge', clear: 'Clear', shelve: 'Shelve', unshelve: 'Unshelve', confirm: 'Confirm', cancel: 'Cancel',
    note: 'Note', reason: 'Reason (required)', shelve_for: 'for',
    state_raised: 'active · unacknowledged', state_acknowledged: 'active · acknowledged', state_returned: 'returned to normal · unacknowledged',
    state_cleared: 'closed', state_shelved: 'shelved until {until} by {by}: {reason}', state_suppressed: 'suppressed by design',
    state_short_raised: 'Unack', state_short_acknowledged: 'Acked', state_short_returned: 'RTN unack', state_short_cleared: 'Closed',
    acked_by: 'ack. by {by}', closed_at: 'closed {at}',
    legend_los: 'Level of Service', legend_nodata: 'no data', legend_online: 'device online', legend_offline: 'device offline', legend_alert: 'alert', legend_degrading: 'worse soon (forecast)', forecast: 'Forecast', in_min: 'in {m} min', forecast_tip: 'forecast: {list}',
    speed: 'Speed', flow: 'Flow', occupancy: 'Occupancy', relative: 'of free flow', los: 'LOS', detectors: 'detectors', window: 'window',
    live_estimate: 'live', subject: 'Subject', city: 'City', segment: 'Segment', device: 'Device', which: 'Which',
    metric: 'Metric', range: 'Range', custom: 'Custom', from: 'From', to: 'To', show: 'Show',
    download_csv: 'Download CSV', download_parquet: 'Download Parquet',
    planner_info: '{n} points · resolution {res} · step {step}', planner_none: 'No data in this range', mean_of: 'mean of {n} detectors',
    unflagged: 'Leave out flagged data', planner_excluded: '{n} flagged readings left out', quality_badge: 'Data quality {score}', quality_flags: 'Data quality {score} · {flags}',
    flag_stuck: 'stuck', flag_zero_busy: 'zero counts when busy', flag_missing: 'missing data', flag_implausible: 'implausible',
    login_title: 'Sign in', login_help: 'Paste your access token.', login: 'Sign in', login_bad: 'This token is not valid.',
    error: 'Error: {m}', ago_s: '{n} s ago', ago_m: '{n} min ago', ago_h: '{n} h ago', rule: 'rule', raw: 'raw',
    operations: 'Road operations', no_operations: 'No active road operations', legend_operation: 'road operation',
    op_kind_incident: 'Incident', op_kind_roadworks: 'Roadworks', op_kind_closure: 'Closure', op_kind_event: 'Event',
    op_sev_minor: 'minor', op_sev_moderate: 'moderate', op_sev_major: 'major', op_sev_critical: 'critical',
    op_since: 'since {at} ({ago})', op_from: 'from {at}', op_planned: 'planned', op_closed_road: 'road closed',
    agency_municipal_police: 'Municipal Police', agency_mobility: 'Mobility', agency_utilities: 'Utilities', agency_transit: 'Transit',
    operation: 'Operation', impact_title: '{metric} on the segments of “{title}”', impact_before: 'Before', impact_during: 'During',
    impact_after: 'After', impact_baseline: 'A week earlier', impact_change: '{pct} vs before', impact_none: 'No operations to compare',
    impact_window: '{kind} · {from} – {to} · {n} segments', impact_ongoing: 'ongoing', download_png: 'Download PNG',
    impact_missing: 'The server does not compare operations yet',
    op_status_planned: 'planned', op_status_active: 'active', op_status_ended: 'ended', op_status_cancelled: 'cancelled',
    // Alert messages by code (docs/api.md, telemetry::alert::MESSAGE_CODES); the subject
    // is shown beside the message, so templates leave it out. Parameters ending in _s are
    // durations.
    'alert.threshold_above': '{metric} {value} {unit}, above {limit} {unit} for {for}',
    'alert.threshold_below': '{metric} {value} {unit}, below {limit} {unit} for {for}',
    'alert.device_offline': 'Offline, last data {silence} ago',
    'alert.flatline': '{metric} stuck at {value} {unit} (± {epsilon}) for {readings} readings, {for}',
    'alert.rate_of_change': '{metric} changing {rate_per_min} {unit}/min, limit {limit_per_min} {unit}/min',
    'alert.los_at_or_worse': 'LOS {grade} or worse for {for} (speed {speed_kmh} km/h)',
    'alert.air_quality_mean': '{metric} mean over {averaging} is {mean} {unit}, above {limit} {unit}',
    'alert.segment_group': 'More than {over_devices} devices of {segment} within {window}: {rule}',
    'alert.rate_limit_overflow': 'Rule {rule}: more than {per_minute} alerts a minute, further ones folded here',
    'alert.anomaly_below': '{metric} {value} {unit}, below its usual {centre} {unit} by more than {k} × {spread} {unit} for {for}',
    'alert.anomaly_above': '{metric} {value} {unit}, above its usual {centre} {unit} by more than {k} × {spread} {unit} for {for}',
    'alert.health_stuck': '{metric} stuck at {value} {unit} for {readings} readings, {for} (data quality)',
    'alert.health_zero_busy': 'No vehicle counted for {for} where {usual} are usual every {window} (data quality)',
    'alert.health_missing': '{missing_pct} % of the expected readings missing over {window} (data quality)',
    'alert.health_implausible': 'Implausible readings ({reason}): {flow_vph} veh/h at {speed_kmh} km/h, occupancy {occupancy_pct} % (data quality)',
    // Stored before message codes existed: the server's own text.
    'alert.legacy': '{message}',
  },
  it: {
    title: 'Centrale di controllo Smart City', tab_live: 'In diretta', tab_planner: 'Pianificazione', logout: 'Esci',
    conn_connecting: 'connessione', conn_open: 'in linea', conn_closed: 'non in linea',
    banner_lost: 'Connessione persa alle {at} — dati vecchi di {age} — nuovo tentativo tra {s} s (tentativo {n})',
    banner_retrying: 'Connessione persa alle {at} — dati vecchi di {age} — nuovo tentativo in corso (tentativo {n})',
    stale_since: 'dati delle {at}', mode_wall: 'Parete', mode_desk: 'Scrivania',
    chart_24h: 'Velocità, ultime 24 ore', usual_range: 'intervallo abituale', chart_unit: '{label} ({unit})',
    kpi_devices: 'Dispositivi in linea', offline: 'non in linea', kpi_rate: 'Letture al secondo', kpi_speed: 'Velocità media città', kpi_speed_short: 'Velocità media',
    kpi_alerts: 'Allarmi aperti', unacked: '{n} da prendere in carico', worst: 'Tratti peggiori', worst_rule: 'per velocità rispetto al flusso libero',
    alerts: 'Allarmi', tab_active: 'Attivi', tab_shelved: 'Sospesi', tab_suppressed: 'Soppressi', tab_history: 'Storico',
    all_severities: 'Tutte le gravità', all_areas: 'Tutte le zone', sev_critical: 'Critico', sev_warning: 'Avviso', sev_info: 'Info',
    no_alerts: 'Nessun allarme aperto', no_shelved: 'Nessun allarme sospeso', no_suppressed: 'Nessun allarme soppresso', no_history: 'Nessun allarme chiuso',
    more_alerts: 'altri {n}', ack: 'Prendi in carico', clear: 'Chiudi', shelve: 'Sospendi', unshelve: 'Riattiva', confirm: 'Conferma', cancel: 'Annulla',
    note: 'Nota', reason: 'Motivo (obbligatorio)', shelve_for: 'per',
    state_raised: 'attivo · da prendere in carico', state_acknowledged: 'attivo · preso in carico', state_returned: 'rientrato · da prendere in carico',
    state_cleared: 'chiuso', state_shelved: 'sospeso fino alle {until} da {by}: {reason}', state_suppressed: 'soppresso per progetto',
    state_short_raised: 'Da prendere', state_short_acknowledged: 'In carico', state_short_returned: 'Rientrato, da prendere', state_short_cleared: 'Chiuso',
    acked_by: 'in carico a {by}', closed_at: 'chiuso {at}',
    legend_los: 'Livello di servizio', legend_nodata: 'nessun dato', legend_online: 'dispositivo in linea', legend_offline: 'dispositivo non in linea', legend_alert: 'allarme', legend_degrading: 'in peggioramento (previsione)', forecast: 'Previsione', in_min: 'tra {m} min', forecast_tip: 'previsione: {list}',
    speed: 'Velocità', flow: 'Flusso', occupancy: 'Occupazione', relative: 'del flusso libero', los: 'LOS', detectors: 'sensori', window: 'finestra',
    live_estimate: 'in diretta', subject: 'Oggetto', city: 'Città', segment: 'Tratto', device: 'Dispositivo', which: 'Quale',
    metric: 'Grandezza', range: 'Intervallo', custom: 'Personalizzato', from: 'Da', to: 'A', show: 'Mostra',
    download_csv: 'Scarica CSV', download_parquet: 'Scarica Parquet',
    planner_info: '{n} punti · risoluzione {res} · passo {step}', planner_none: 'Nessun dato in questo intervallo', mean_of: 'media di {n} sensori',
    unflagged: 'Escludi i dati segnalati', planner_excluded: '{n} letture segnalate escluse', quality_badge: 'Qualità dei dati {score}', quality_flags: 'Qualità dei dati {score} · {flags}',
    flag_stuck: 'bloccato', flag_zero_busy: 'conteggi nulli nelle ore di punta', flag_missing: 'dati mancanti', flag_implausible: 'non plausibile',
    login_title: 'Accesso', login_help: 'Incolla il tuo token di accesso.', login: 'Accedi', login_bad: 'Token non valido.',
    error: 'Errore: {m}', ago_s: '{n} s fa', ago_m: '{n} min fa', ago_h: '{n} h fa', rule: 'regola', raw: 'grezzo',
    operations: 'Interventi stradali', no_operations: 'Nessun intervento stradale in corso', legend_operation: 'intervento',
    op_kind_incident: 'Incidente', op_kind_roadworks: 'Lavori stradali', op_kind_closure: 'Chiusura', op_kind_event: 'Evento',
    op_sev_minor: 'lieve', op_sev_moderate: 'media', op_sev_major: 'grave', op_sev_critical: 'critica',
    op_since: 'dalle {at} ({ago})', op_from: 'dalle {at}', op_planned: 'programmato', op_closed_road: 'strada chiusa',
    agency_municipal_police: 'Polizia Municipale', agency_mobility: 'Mobilità', agency_utilities: 'Servizi a rete', agency_transit: 'Trasporto pubblico',
    operation: 'Intervento', impact_title: '{metric} sui tratti di «{title}»', impact_before: 'Prima', impact_during: 'Durante',
    impact_after: 'Dopo', impact_baseline: 'Una settimana prima', impact_change: '{pct} rispetto a prima', impact_none: 'Nessun intervento da confrontare',
    impact_window: '{kind} · {from} – {to} · {n} tratti', impact_ongoing: 'in corso', download_png: 'Scarica PNG',
    impact_missing: 'Il server non confronta ancora gli interventi',
    op_status_planned: 'programmato', op_status_active: 'in corso', op_status_ended: 'concluso', op_status_cancelled: 'annullato',
    'alert.threshold_above': '{metric} {value} {unit}, oltre {limit} {unit} per {for}',
    'alert.threshold_below': '{metric} {value} {unit}, sotto {limit} {unit} per {for}',
    'alert.device_offline': 'Non in linea, ultimo dato {silence} fa',
    'alert.flatline': '{metric} fermo a {value} {unit} (± {epsilon}) per {readings} letture, {for}',
    'alert.rate_of_change': '{metric} varia di {rate_per_min} {unit}/min, limite {limit_per_min} {unit}/min',
    'alert.los_at_or_worse': 'LOS {grade} o peggiore da {for} (velocità {speed_kmh} km/h)',
    'alert.air_quality_mean': '{metric}: media su {averaging} di {mean} {unit}, oltre {limit} {unit}',
    'alert.segment_group': 'Più di {over_devices} dispositivi di {segment} in {window}: {rule}',
    'alert.rate_limit_overflow': 'Regola {rule}: più di {per_minute} allarmi al minuto, i successivi raccolti qui',
    'alert.anomaly_below': '{metric} {value} {unit}, sotto il consueto {centre} {unit} di oltre {k} × {spread} {unit} per {for}',
    'alert.anomaly_above': '{metric} {value} {unit}, sopra il consueto {centre} {unit} di oltre {k} × {spread} {unit} per {for}',
    'alert.health_stuck': '{metric} bloccato a {value} {unit} per {readings} letture, {for} (qualità dei dati)',
    'alert.health_zero_busy': 'Nessun veicolo contato per {for} dove di solito ne passano {usual} ogni {window} (qualità dei dati)',
    'alert.health_missing': 'Manca il {missing_pct} % delle letture attese in {window} (qualità dei dati)',
    'alert.health_implausible': 'Letture non plausibili ({reason}): {flow_vph} veic/h a {speed_kmh} km/h, occupazione {occupancy_pct} % (qualità dei dati)',
    'alert.legacy': '{message}',
  },
};

export const LANGUAGES = ['it', 'en'];
let current = 'en';
/** @type {Map<string, MetricInfo>} */
const metrics = new Map();

/** @param {string} lang */
export function setLang(lang) {
  current = LANGUAGES.includes(lang) ? lang : 'en';
  document.documentElement.lang = current;
}
export const lang = () => current;
/** The locale for numbers and dates: Italian, or British English (24-hour clock, day first). */
export const locale = () => (current === 'it' ? 'it-IT' : 'en-GB');

/**
 * @param {string} key
 * @param {Record<string, string | number>} [params]
 */
export function t(key, params) {
  let s = TEXT[current]?.[key] ?? TEXT.en[key] ?? key;
  if (params) for (const [k, v] of Object.entries(params)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}
/** Whether a text exists for the key in both languages (alert codes are checked by the tests). */
export const hasText = (/** @type {string} */ key) => LANGUAGES.every((l) => key in TEXT[l]);

/** @param {{metrics?: MetricInfo[]}} catalogue */
export function setCatalogue(catalogue) {
  metrics.clear();
  for (const m of catalogue.metrics || []) metrics.set(m.id, m);
}
/** @param {string} id */
export const metricInfo = (id) => metrics.get(id);
export const metricIds = () => [...metrics.keys()];
/** @param {string} id */
export const metricLabel = (id) => metrics.get(id)?.label?.[current] ?? metrics.get(id)?.label?.en ?? id;
/** @param {string} id */
export const unitOf = (id) => metrics.get(id)?.unit ?? '';

const numberFormats = new Map();
/**
 * A number in the language's format (decimal comma in Italian); '–' when absent.
 * @param {number | null | undefined} v
 * @param {number} [decimals]
 */
export function num(v, decimals = 0) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const key = `${current}:${decimals}`;
  let f = numberFormats.get(key);
  if (!f) {
    f = new Intl.NumberFormat(locale(), { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    numberFormats.set(key, f);
  }
  return f.format(v);
}
/** @param {number | null | undefined} v a metric's value with its catalogue decimals @param {string} metric */
export const metricValue = (v, metric) => num(v, metrics.get(metric)?.decimals ?? 1);
/** @param {number | null | undefined} ratio */
export const percent = (ratio) => (ratio === null || ratio === undefined || !Number.isFinite(ratio) ? '–' : `${num(ratio * 100, 0)} %`);

/** @param {number} ms */
export const clock = (ms) => new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).format(ms);
/** @param {number} ms */
export const hhmm = (ms) => new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
/** @param {number} ms */
export const dayMonth = (ms) => new Intl.DateTimeFormat(locale(), { day: 'numeric', month: 'short' }).format(ms);
/** @param {number} ms */
export const dateTime = (ms) => new Intl.DateTimeFormat(locale(), { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);

/** A duration in words: "45 s", "12 min", "3 h 5 min". @param {number} seconds */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${num(s)} s`;
  if (s < 7200) return `${num(Math.round(s / 60))} min`;
  const h = Math.floor(s / 3600);
  const m = Math.round((s % 3600) / 60);
  return m ? `${num(h)} h ${num(m)} min` : `${num(h)} h`;
}
/** @param {number} ms */
export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return t('ago_s', { n: s });
  if (s < 7200) return t('ago_m', { n: Math.round(s / 60) });
  return t('ago_h', { n: Math.round(s / 3600) });
}

/**
 * An alert's message in the chosen language, from its code and parameters; the server's
 * English text when the code is not known here (or `legacy`).
 * @param {{code?: string, params?: Record<string, any>, message?: string}} alert
 * @param {(segment: string) => string} [segmentName]
 */
export function alertText(alert, segmentName = (id) => id) {
  const key = `alert.${alert.code}`;
  if (!alert.code || !(key in TEXT.en)) return alert.message ?? '';
  const p = alert.params || {};
  const metric = typeof p.metric === 'string' ? p.metric : '';
  /** @type {Record<string, string | number>} */
  const shown = {};
  for (const [k, v] of Object.entries(p)) {
    if (k.endsWith('_s') && typeof v === 'number') shown[k.slice(0, -2)] = duration(v);
    else if (typeof v === 'number') shown[k] = metric && ['value', 'limit', 'mean', 'epsilon', 'rate_per_min', 'limit_per_min'].includes(k) ? metricValue(v, metric) : num(v, Number.isInteger(v) ? 0 : 1);
    else shown[k] = String(v ?? '');
  }
  if (metric) {
    shown.metric = metricLabel(metric);
    shown.unit = unitOf(metric) || String(p.unit ?? '');
  }
  if (typeof p.segment === 'string') shown.segment = segmentName(p.segment);
  shown.message = alert.message ?? '';
  return t(key, shown).replace(/\s+/g, ' ').replace(' ,', ',').trim();
}

/** Every element with data-i18n gets its text. */
export function applyTexts(root = document) {
  root.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(/** @type {HTMLElement} */ (el).dataset.i18n || ''); });
}
