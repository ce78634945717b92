"""Monitoring: drift, metrics, online drift windows and the HTML reports."""
