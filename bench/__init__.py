"""Benchmarks of keras_wc: speed/memory ratios (`bench.speed`) and the
regularization study (`bench.study`)."""
