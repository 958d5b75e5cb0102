"""AtomicPusher: the standard TFX Pusher with atomic version publishing and retention; see executor.py."""
