"""The monitor's operations side: its Prometheus metrics (the loop is services.kpi.monitor)."""
