"""Grafana dashboards as code, generated from the KPI catalog and the storage schema."""
