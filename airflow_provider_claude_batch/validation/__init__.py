"""Checks that catch, before anything is sent or created, what the API or Airflow would reject later.

Every module here is pure Python (nothing from Airflow): ``schema`` and ``rules`` check request
params, ``checker`` runs them once per distinct request shape, ``models`` knows the models,
``arguments`` checks operator, sensor and trigger arguments, ``suggest`` finds the intended name.
"""
