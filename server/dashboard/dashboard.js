// The subfed dashboard page: draws the coordinator's feed (server/dashboard.ts)
// and follows it over server-sent events (/api/events). Plain browser script;
// chart.js is served next to it by the coordinator.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const color = {
    trained: '#4f46e5',
    received: '#0ea5e9',
    subfed: '#4f46e5',
    dense: '#94a3b8',
    sparsity: '#7c3aed',
    reporters: '#10b981',
    dropouts: '#f59e0b',
    channels: ['#0ea5e9', '#14b8a6', '#f97316', '#ec4899', '#84cc16', '#a855f7'],
  };

  // ------------------------------------------------------------------ formatting

  const pct = (x, digits = 1) => (x === null || x === undefined ? '–' : `${(100 * x).toFixed(digits)}%`);
  const bytes = (n) => {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n;
    let u = 0;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return `${v.toFixed(u === 0 ? 0 : v < 10 ? 2 : 1)} ${units[u]}`;
  };
  /** "12 s ago" from an epoch-ms time, by this browser's clock; '–' for never (null: not since the coordinator started). */
  const ago = (t) => {
    if (t === null || t === undefined) return '–';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  };
  const int = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));
  const mib = (n) => n / (1024 * 1024);

  // ------------------------------------------------------------------ charts

  Chart.defaults.font.family = getComputedStyle(document.documentElement).fontFamily;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = '#475569';
  Chart.defaults.borderColor = '#e2e8f0';
  Chart.defaults.animation = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;
  Chart.defaults.plugins.legend.labels.boxHeight = 12;
  // Line charts show each series' own stroke (solid, dashed) in the legend.
  const lineLegend = { labels: { usePointStyle: true, pointStyle: 'line', pointStyleWidth: 26 } };
  Chart.defaults.plugins.legend.position = 'bottom';
  Chart.defaults.elements.line.tension = 0.25;
  Chart.defaults.elements.point.radius = 2.5;
  Chart.defaults.elements.point.hoverRadius = 5;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.interaction = { mode: 'index', intersect: false };

  const roundAxis = { title: { display: true, text: 'round' }, grid: { display: false } };
  const percentAxis = (title, extra = {}) => ({
    title: { display: true, text: title },
    ticks: { callback: (v) => `${v}%` },
    ...extra,
  });

  const line = (label, borderColor, extra = {}) => ({
    label,
    data: [],
    borderColor,
    backgroundColor: borderColor,
    borderWidth: 2,
    spanGaps: true,
    ...extra,
  });

  const charts = {
    accuracy: new Chart($('chart-accuracy'), {
      type: 'line',
      data: {
        labels: [],
        datasets: [
          line('after local training', color.trained, { fill: false }),
          line('as received (before training)', color.received, { borderDash: [6, 4] }),
        ],
      },
      options: {
        scales: { x: roundAxis, y: percentAxis('accuracy', { suggestedMin: 0, max: 100 }) },
        plugins: {
          legend: lineLegend,
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.parsed.y.toFixed(1)}%` } },
        },
      },
    }),
    bytes: new Chart($('chart-bytes'), {
      type: 'line',
      data: {
        labels: [],
        datasets: [
          line('subfed (sparse)', color.subfed, { fill: { target: 'origin' }, backgroundColor: 'rgba(79,70,229,0.12)' }),
          line('dense FedAvg', color.dense, { borderDash: [5, 4] }),
        ],
      },
      options: {
        scales: { x: roundAxis, y: { title: { display: true, text: 'MiB' }, beginAtZero: true } },
        plugins: {
          legend: lineLegend,
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${c.parsed.y.toFixed(2)} MiB` } },
        },
      },
    }),
    sparsity: new Chart($('chart-sparsity'), {
      type: 'line',
      data: { labels: [], datasets: [line('sparsity', color.sparsity, { yAxisID: 'y' })] },
      options: {
        scales: {
          x: roundAxis,
          y: percentAxis('pruned parameters', { beginAtZero: true, suggestedMax: 50 }),
          channels: {
            display: false,
            position: 'right',
            beginAtZero: true,
            title: { display: true, text: 'kept channels' },
            grid: { drawOnChartArea: false },
          },
        },
        plugins: { legend: lineLegend },
      },
    }),
    participation: new Chart($('chart-participation'), {
      type: 'bar',
      data: {
        labels: [],
        datasets: [
          { label: 'reporters', data: [], backgroundColor: color.reporters, borderRadius: 4, stack: 'members' },
          { label: 'dropouts', data: [], backgroundColor: color.dropouts, borderRadius: 4, stack: 'members' },
        ],
      },
      options: {
        scales: {
          x: { ...roundAxis, stacked: true },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: 'members' }, ticks: { precision: 0 } },
        },
      },
    }),
  };

  // ------------------------------------------------------------------ state

  /** @type {{ title: string, status: any, model: any, rounds: any[], clients: Map<string, any> }} */
  const state = { title: '', status: null, model: null, rounds: [], clients: new Map() };
  const changedRows = new Set();

  function drawCharts() {
    const rounds = state.rounds;
    const labels = rounds.map((r) => r.round);
    const toPct = (x) => (x === null ? null : 100 * x);

    charts.accuracy.data.labels = labels;
    charts.accuracy.data.datasets[0].data = rounds.map((r) => toPct(r.accuracy));
    charts.accuracy.data.datasets[1].data = rounds.map((r) => toPct(r.receivedAccuracy));

    charts.bytes.data.labels = labels;
    charts.bytes.data.datasets[0].data = rounds.map((r) => mib(r.cumulativeBytes));
    charts.bytes.data.datasets[1].data = rounds.map((r) => mib(r.cumulativeDenseBytes));

    const layers = rounds.reduce((n, r) => Math.max(n, r.channelsKept ? r.channelsKept.length : 0), 0);
    const sparsity = charts.sparsity;
    sparsity.data.labels = labels;
    sparsity.data.datasets[0].data = rounds.map((r) => toPct(r.sparsity));
    sparsity.data.datasets.length = 1;
    for (let l = 0; l < layers; l++) {
      sparsity.data.datasets.push(
        line(`channels, BN layer ${l + 1}`, color.channels[l % color.channels.length], {
          yAxisID: 'channels',
          borderDash: [3, 3],
          pointRadius: 1.5,
          data: rounds.map((r) => (r.channelsKept ? r.channelsKept[l] : null)),
        }),
      );
    }
    sparsity.options.scales.channels.display = layers > 0;

    charts.participation.data.labels = labels;
    charts.participation.data.datasets[0].data = rounds.map((r) => r.reporters);
    charts.participation.data.datasets[1].data = rounds.map((r) => r.dropouts);

    for (const chart of Object.values(charts)) chart.update();
    $('charts').dataset.rounds = String(rounds.length);
  }

  function drawHeader() {
    const s = state.status;
    $('title').textContent = state.title;
    document.title = `subfed · ${state.title}`;
    const model = state.model
      ? `model: ${int(state.model.parameters)} parameters in ${state.model.tensors} tensors`
      : 'no model yet';
    $('subtitle').textContent = s ? `${model} · ${int(s.totalRounds)} rounds configured` : model;
    const phase = $('phase');
    phase.textContent = s ? s.phase : 'starting';
    phase.dataset.phase = s ? s.phase : 'starting';
    const done = s ? s.lastCommittedRound : 0;
    const total = s ? s.totalRounds : 0;
    $('round-label').textContent = s ? `round ${done} of ${total} committed` : 'round –';
    $('round-open').textContent = s && s.round ? `round ${s.round.id}: ${s.round.reported}/${s.round.members}` : '';
    $('round-bar').style.width = total > 0 ? `${Math.min(100, (100 * done) / total)}%` : '0';
  }

  function drawKpis() {
    const last = state.rounds[state.rounds.length - 1];
    $('kpi-accuracy').textContent = last ? pct(last.accuracy) : '–';
    $('kpi-received').textContent = `as received: ${last ? pct(last.receivedAccuracy) : '–'}`;
    if (last) {
      $('kpi-bytes').textContent = bytes(last.cumulativeBytes);
      const saved = last.cumulativeDenseBytes > 0 ? 1 - last.cumulativeBytes / last.cumulativeDenseBytes : null;
      $('kpi-dense').innerHTML = '';
      $('kpi-dense').append(`dense FedAvg: ${bytes(last.cumulativeDenseBytes)}`);
      if (saved !== null) {
        const b = document.createElement('b');
        b.textContent = ` · ${pct(saved, 0)} saved`;
        $('kpi-dense').append(b);
      }
    } else {
      $('kpi-bytes').textContent = '–';
      $('kpi-dense').textContent = 'dense FedAvg: –';
    }
    $('kpi-sparsity').textContent = last ? pct(last.sparsity) : '–';
    $('kpi-channels').textContent =
      last && last.channelsKept ? `kept channels: ${last.channelsKept.map((c) => c.toFixed(1)).join(' · ')}` : 'kept channels: –';
    const s = state.status;
    const active = [...state.clients.values()].filter((c) => c.active).length;
    $('kpi-clients').textContent = int(active);
    $('kpi-participation').textContent =
      s && s.round
        ? `round ${s.round.id}: ${s.round.reported} of ${s.round.members} reported (quorum ${s.round.quorum})`
        : last
          ? `last round: ${last.reporters} of ${last.members} reported`
          : `${int(state.clients.size)} registered`;
  }

  // ------------------------------------------------------------------ client table

  // One entry per column.
  const columns = [
    { label: 'Client', cell: (r) => r.id, className: 'id' },
    { label: 'Name', cell: (r) => r.name },
    {
      label: 'State',
      cell: (r) => {
        const b = document.createElement('span');
        b.className = r.state === 'alive' ? 'badge' : `badge ${r.state === 'left' ? 'left' : r.state}`;
        b.textContent = r.state;
        return b;
      },
    },
    { label: 'Last seen', cell: (r) => ago(r.lastSeenAt), num: true },
    { label: 'Examples', cell: (r) => int(r.numExamples), num: true },
    { label: 'Rounds taken', cell: (r) => int(r.rounds), num: true, key: 'rounds' },
    { label: 'Last round', cell: (r) => (r.lastRound === null ? '–' : String(r.lastRound)), num: true },
    { label: 'Accuracy', cell: (r) => pct(r.accuracy), num: true, key: 'accuracy' },
    {
      label: 'Sparsity',
      num: true,
      key: 'sparsity',
      cell: (r) => {
        const wrap = document.createElement('span');
        wrap.className = 'meter';
        const bar = document.createElement('span');
        const fill = document.createElement('i');
        fill.style.width = `${r.sparsity === null ? 0 : Math.round(100 * r.sparsity)}%`;
        bar.append(fill);
        wrap.append(pct(r.sparsity), bar);
        return wrap;
      },
    },
    { label: 'Bytes up', cell: (r) => bytes(r.bytesUp), num: true, key: 'bytesUp' },
    { label: 'Bytes down', cell: (r) => bytes(r.bytesDown), num: true, key: 'bytesDown' },
  ];

  const headRow = document.querySelector('#clients thead tr');
  for (const c of columns) {
    const th = document.createElement('th');
    th.textContent = c.label;
    if (c.num) th.className = 'num';
    headRow.append(th);
  }

  function drawTable() {
    const body = document.querySelector('#clients tbody');
    const rows = [...state.clients.values()];
    const fragment = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement('tr');
      tr.dataset.client = r.id;
      tr.dataset.rounds = String(r.rounds);
      if (changedRows.has(r.id)) tr.className = 'changed';
      for (const c of columns) {
        const td = document.createElement('td');
        if (c.num) td.className = 'num';
        if (c.key) td.dataset.key = c.key;
        const v = c.cell(r);
        if (typeof v === 'string') td.textContent = v;
        else td.append(v);
        tr.append(td);
      }
      fragment.append(tr);
    }
    body.replaceChildren(fragment);
    changedRows.clear();
    $('clients-empty').hidden = rows.length > 0;
    $('client-count').textContent = rows.length === 1 ? '1 client' : `${int(rows.length)} clients`;
  }

  function drawAll() {
    drawHeader();
    drawKpis();
    drawCharts();
    drawTable();
  }

  // ------------------------------------------------------------------ live feed

  const setClients = (rows) => {
    for (const r of rows) state.clients.set(r.id, r);
  };

  const handlers = {
    snapshot: (e) => {
      const s = e.snapshot;
      state.title = s.title;
      state.status = s.status;
      state.model = s.model;
      state.rounds = s.rounds.slice();
      state.clients = new Map();
      setClients(s.clients);
      drawAll();
    },
    status: (e) => {
      state.status = e.status;
      drawHeader();
      drawKpis();
    },
    round: (e) => {
      state.rounds.push(e.round);
      setClients(e.clients);
      for (const r of e.clients) changedRows.add(r.id);
      drawAll();
    },
    clients: (e) => {
      state.clients = new Map();
      setClients(e.clients);
      drawKpis();
      drawTable();
    },
  };

  const connection = $('connection').querySelector('span');
  const events = new EventSource('api/events');
  events.onopen = () => {
    document.body.dataset.connection = 'live';
    connection.textContent = 'live';
  };
  events.onerror = () => {
    // EventSource reconnects by itself; the next snapshot brings the page up to date.
    document.body.dataset.connection = 'lost';
    connection.textContent = 'reconnecting';
  };
  for (const [kind, handle] of Object.entries(handlers)) {
    events.addEventListener(kind, (message) => handle(JSON.parse(message.data)));
  }
  drawAll();
})();
