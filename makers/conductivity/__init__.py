"""MD ionic-conductivity screening (core: pure functions; jobs: Makers)."""
