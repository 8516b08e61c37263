"""Ray Serve: the predictor and its applications as an HTTP service (see ``app``)."""
