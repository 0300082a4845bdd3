"""Pure domain logic: no I/O, no Kubernetes, no database."""
