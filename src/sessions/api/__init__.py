"""The gRPC face: servicers, validation, proto <-> domain conversion, errors."""
