"""The developer's loop around the road: ``mlctl run`` from source and ``mlctl doctor``."""
