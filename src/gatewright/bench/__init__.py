"""Benchmarks: run models through devices and targets, measure them with MLPerf LoadGen, and report."""
