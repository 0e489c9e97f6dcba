"""``mlctl ci``: the service's CI pipeline files (GitHub Actions, GitLab CI)."""
