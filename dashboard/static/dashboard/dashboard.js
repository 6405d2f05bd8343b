/* Election Monitor dashboard: draws the charts (Chartist, SVG) from the data each page embeds,
   and while an election is active keeps the page fresh by conditional polling of the cached
   API (README, "Dashboard"): one request every 2 s at most, answered 304 while nothing changed. */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var lang = document.documentElement.lang || "en";
  var charts = {};

  function formatNumber(value, decimals) {
    return new Intl.NumberFormat(lang, {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
      useGrouping: true
    }).format(value);
  }

  // --- charts -------------------------------------------------------------------------------

  function labelStep(count, width) {
    var fits = Math.max(2, Math.floor(width / 95));
    return Math.max(1, Math.ceil(count / fits));
  }

  function drawChart(el) {
    var source = document.getElementById(el.getAttribute("data-chart"));
    if (!source || typeof Chartist === "undefined") {
      return;
    }
    var spec = JSON.parse(source.textContent);
    var step = labelStep(spec.labels.length, el.clientWidth || 320);
    var data = {
      labels: spec.labels,
      series: spec.series.map(function (s) { return { name: s.name, data: s.data }; })
    };
    var options = {
      height: "220px",
      chartPadding: { top: 10, right: 12, bottom: 0, left: 4 },
      axisX: {
        showGrid: false,
        labelInterpolationFnc: function (value, index) { return index % step === 0 ? value : null; }
      },
      axisY: {
        onlyInteger: spec.decimals === 0,
        labelInterpolationFnc: function (value) { return formatNumber(value, spec.decimals === 0 ? 0 : 1); }
      }
    };
    var chart;
    if (spec.type === "line") {
      options.showPoint = true;
      options.lineSmooth = false;
      options.fullWidth = true;
      chart = new Chartist.LineChart(el, data, options);
    } else {
      // Bars as wide as the room each one has (Chartist's stylesheet draws 10 px bars, which
      // overlap on a phone): room per bar, less a gap.
      var slots = Math.max(1, spec.labels.length * spec.series.length);
      var bar = Math.max(1, Math.min(10, Math.floor(((el.clientWidth || 320) - 50) / slots * 0.8)));
      options.seriesBarDistance = bar;
      chart = new Chartist.BarChart(el, data, options);
      chart.on("draw", function (context) {
        if (context.type === "bar") {
          context.element.attr({ style: "stroke-width: " + bar + "px" });
        }
      });
    }
    var expected = spec.series.reduce(function (n, s) { return n + s.data.length; }, 0);
    el.setAttribute("data-points", String(expected));
    chart.on("created", function () { el.setAttribute("data-drawn", "1"); });
    charts[el.id] = chart;
  }

  function drawCharts(root) {
    Array.prototype.forEach.call(root.querySelectorAll("[data-chart]"), function (el) {
      if (charts[el.id]) {
        charts[el.id].detach();
        delete charts[el.id];
      }
      drawChart(el);
    });
  }

  // --- live updates --------------------------------------------------------------------------

  var liveUrl = document.body.getAttribute("data-live-url");
  var renderedAt = document.body.getAttribute("data-computed-at");
  var etag = null;
  var refreshPending = false;

  function updateFields(data) {
    Array.prototype.forEach.call(document.querySelectorAll("[data-field]"), function (el) {
      var value = data[el.getAttribute("data-field")];
      if (typeof value === "number") {
        el.textContent = formatNumber(value, Number(el.getAttribute("data-decimals") || 0));
      }
    });
  }

  function refreshSections() {
    // The server-rendered sections (tables, charts, feeds), fetched once after a change.
    return fetch(window.location.href, { cache: "no-store", credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        Array.prototype.forEach.call(document.querySelectorAll("[data-live-section]"), function (section) {
          var replacement = fresh.getElementById(section.id);
          if (!replacement) {
            return;
          }
          // Keep open table alternatives open.
          var open = Array.prototype.map.call(section.querySelectorAll("details[open]"), function (d) { return d.id; });
          section.innerHTML = replacement.innerHTML;
          open.forEach(function (id) { var d = id && document.getElementById(id); if (d) { d.open = true; } });
          drawCharts(section);
        });
        renderedAt = fresh.body.getAttribute("data-computed-at") || renderedAt;
      });
  }

  function poll() {
    var headers = { Accept: "application/json" };
    if (etag) {
      headers["If-None-Match"] = etag;
    }
    // no-store: the browser's own cache stays out of the way, so a 304 reaches this code.
    return fetch(liveUrl, { cache: "no-store", credentials: "same-origin", headers: headers })
      .then(function (response) {
        if (response.status !== 200) {
          return null;
        }
        etag = response.headers.get("ETag");
        return response.json();
      })
      .then(function (data) {
        if (!data) {
          return;
        }
        updateFields(data);
        if (data.computed_at !== renderedAt) {
          refreshPending = true;
        }
      });
  }

  function tick() {
    var started = Date.now();
    var work = document.hidden ? Promise.resolve() : (refreshPending ? (refreshPending = false, refreshSections()) : poll());
    work.catch(function () { /* the server or network is away: try again at the next tick */ })
      .then(function () {
        window.setTimeout(tick, Math.max(0, POLL_MS - (Date.now() - started)));
      });
  }

  drawCharts(document);
  if (liveUrl) {
    window.setTimeout(tick, POLL_MS);
  }
})();
