"""Deploying: the release's target, plan -> gate -> apply -> watch, day-2 commands, the local target."""
