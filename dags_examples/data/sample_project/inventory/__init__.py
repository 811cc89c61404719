"""A tiny inventory library: the sample project the nightly test-generation DAG writes tests for."""
