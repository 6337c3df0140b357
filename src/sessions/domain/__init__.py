"""The domain: sessions, their schedules, the rules that decide. Pure Python:
no gRPC, no SQL, no clock (callers pass the time in)."""
