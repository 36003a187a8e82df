"""Static HTML report pages (Altair/Vega-Lite charts inlined for offline use) built from the catalog's SQL views."""
