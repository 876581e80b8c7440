"""Systems under test. Each trainer runs in its own process (see trainers.worker)."""
