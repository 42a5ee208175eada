//! Binary translation trace, reader and offline replay.
