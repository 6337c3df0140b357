"""Read models: the projector that folds the event log into them, the
recorders that store them, and the queries that serve them."""
