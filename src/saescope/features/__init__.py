"""Per-feature statistics over a corpus (one streaming pass -> a RUN folder), and looking at them:
tables, search, logit effects, dashboards."""
