"""Services: one class per concern, with start()/stop(), turning core events into replies, state and metrics."""
