"""Numbers that the command line and the application service share, in a module that
imports nothing, so the command line can start without loading torch."""

MIN_STDERR_SAMPLES = 20  # samples before a standard-error tolerance may stop a run
