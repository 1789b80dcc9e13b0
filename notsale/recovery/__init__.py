"""Recovery: the watch that keeps each sale ready, and the rebuild of a sale's Redis state from
PostgreSQL (reconcile.py, with its Lua)."""
