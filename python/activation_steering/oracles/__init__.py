"""Plain twins of every fast path (pure torch / numpy / Python), kept slow and
obvious on purpose: tests hold each fast path to its twin."""
