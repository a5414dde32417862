"""``python -m consumer.report``: the Kibana dashboard as one self-contained HTML file, for users without Kibana.

Reads the anomaly index (``bp-anomalies``), the consumers' statistics index (``bp-stats``) and the normal archive
(JSON Lines under ``data/normal/``) and writes one HTML file with the dashboard's panels as SVG charts
(matplotlib, each chart its own SVG document in a ``data:`` URL), a summary and every number also as JSON
(``<script type="application/json" id="bp-report-data">``). The file references nothing outside itself: no
scripts, style sheets, fonts or images to fetch, so it opens offline.

Numbers, and where they come from:

- anomalies: documents in the anomaly index (one per anomalous reading; ``_id`` is stable, so no duplicates);
- normal: lines in the archive (one per normal reading; the consumer never writes a line twice);
- readings = normal + anomalies; anomaly rate = anomalies / readings; actionable = critical + high priority;
- rejected: the sum of ``rejected`` over the statistics documents (rejected messages go to the dead-letter topic
  only, so the statistics are the one place that counts them).

The modules, in the order the data flows:

- ``model``: the values (summaries, time series, histograms) and the pure functions that shape them;
- ``queries``: the Elasticsearch queries (the dashboard's panels) → ``AnomalySummary``, ``StatsSummary``;
- ``archive``: the normal archive, counted line by line → ``ArchiveSummary``;
- ``charts``: matplotlib figures → ``Chart`` (an SVG ``data:`` URL);
- ``render``: ``Report`` → HTML through ``templates/report.html.j2`` (Jinja2, autoescaped);
- ``cli``: the command line (build, write atomically, print a headline).
"""
