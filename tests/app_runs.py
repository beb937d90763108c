"""Limits shared by the tests that run ``python run.py`` in a subprocess."""

# Seconds before a run of the app counts as hung. Alone on two cores the longest (CPN-R50, 300
# steps) takes about 5 minutes; with trainings beside the suite it took over 15 and failed the
# former 900 s limit, which guards against hangs, not slowness.
APP_RUN_TIMEOUT_S = 2400
