"""``mlctl new`` and ``mlctl update``: service directories from templates."""
