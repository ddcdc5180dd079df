"""The ICQ conformance suite: vectors, their generator, and a runner for any decoder."""
