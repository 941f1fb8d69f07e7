"""Prefect flows over vt_models' steps; a served flow run is a process of its own."""

from vt_models.allocator import keep_large_allocations

# the allocator setting every `vt` command runs with (~1.7x faster CPU training; vt_models.allocator)
keep_large_allocations()
