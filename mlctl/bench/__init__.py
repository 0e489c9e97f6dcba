"""``mlctl bench``: load-testing a running service."""
