"""Airflow plugins of the provider: the "Claude Batches" monitoring pages (see ``docs/monitoring.md``)."""
